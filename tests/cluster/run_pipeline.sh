#!/usr/bin/env bash
# Job: the cluster test (make test-cluster). Proves the pipeline runs on a real SLURM cluster:
#   1. starts the throwaway one-node cluster (tests/cluster/slurm.sh up) unless one is already running;
#   2. runs tests/cluster/tiny.yaml end to end with `snakemake --executor slurm` (profiles/slurm-local), every
#      rule a SLURM job, in a temporary folder; at the same time tests/cluster/test_failure.sh checks that a
#      failing job fails the run and is named;
#   3. checks the outputs, the summary table and the sbatch job ids (tests/cluster/check_outputs.py);
#   4. stops the cluster it started (also on failure or interruption: trap);
#   5. runs the same config locally (`snakemake --cores 2`) and checks it, for the wall-time comparison.
# Needs root (Debian, apt-get reachable on first use). Prints each step's time. Exit 0 only if all passed.
# Environment: CLUSTER_RUN_LIMIT_S (per Snakemake run, default 480), KEEP_WORKDIR=1 keeps the temporary folder.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

LIMIT_S=${CLUSTER_RUN_LIMIT_S:-480}
SLURM_SH=$REPO/tests/cluster/slurm.sh
TINY=$REPO/tests/cluster/tiny.yaml

[[ $EUID -eq 0 ]] || { say "error: needs root (installs and starts SLURM); in CI it runs as root"; exit 1; }
[[ -x $SNAKEMAKE ]] || { say "error: $SNAKEMAKE missing; run 'make test-cluster' (it creates .venv)"; exit 1; }

WORK=$(mktemp -d /tmp/graphprune-cluster.XXXXXX)
TEST_START=$EPOCHREALTIME
declare -A TIMES=()
FAILURES=()
OURS=0          # 1 while a cluster started by this script runs
FAILURE_PID=""

stop_cluster() {
    local start=$EPOCHREALTIME
    bash "$SLURM_SH" down
    OURS=0
    TIMES[cluster down]=$(since "$start")
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $FAILURE_PID ]] && kill -0 "$FAILURE_PID" 2>/dev/null; then
        kill -INT "$FAILURE_PID" 2>/dev/null || true
        wait "$FAILURE_PID" 2>/dev/null || true
    fi
    if ((OURS)); then stop_cluster; fi
    if ((rc == 0)) && [[ ${KEEP_WORKDIR:-0} != 1 ]]; then
        rm -rf "$WORK"
    else
        say "outputs and logs kept in $WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# Print the SLURM submissions of a run's output, one line each.
show_submissions() {
    sed -n 's/^Job \([0-9]*\) has been submitted with SLURM jobid \([0-9_]*\) (log: \(.*\))\.$/  job \1 -> SLURM job \2, log \3/p' "$1"
}

# 1. Cluster
if bash "$SLURM_SH" status >/dev/null 2>&1; then
    say "a test cluster is already running: using it and leaving it running"
    TIMES[cluster up]=0.0
else
    start=$EPOCHREALTIME
    OURS=1
    bash "$SLURM_SH" up
    TIMES[cluster up]=$(since "$start")
fi

# 2. End-to-end run under SLURM, with the failure test alongside.
mkdir -p "$WORK/slurm"
cp "$TINY" "$WORK/slurm/config.yaml"
bash "$REPO/tests/cluster/test_failure.sh" "$WORK/failure" >"$WORK/failure.log" 2>&1 &
FAILURE_PID=$!
mapfile -t PROFILE < <(slurm_profile_args)
say "SLURM run: snakemake --directory $WORK/slurm ${PROFILE[*]}"
run_snakemake "$LIMIT_S" "$WORK/slurm.out" --directory "$WORK/slurm" "${PROFILE[@]}"
TIMES[SLURM run]=$RUN_S
show_submissions "$WORK/slurm.out"
if ((RUN_RC != 0)); then
    FAILURES+=("the SLURM run exited $RUN_RC")
    say "SLURM run failed (exit $RUN_RC); last 40 lines of $WORK/slurm.out:"
    tail -40 "$WORK/slurm.out"
fi

failure_rc=0
wait "$FAILURE_PID" || failure_rc=$?
FAILURE_PID=""
cat "$WORK/failure.log"
((failure_rc == 0)) || FAILURES+=("the failure test (exit $failure_rc)")
TIMES[failure test]=$(sed -n 's/.*failure test passed in \([0-9.]*\)s.*/\1/p' "$WORK/failure.log")

# 3. Outputs of the SLURM run
if ((RUN_RC == 0)); then
    say "checking the SLURM run's outputs"
    "$PYTHON" -W ignore "$REPO/tests/cluster/check_outputs.py" "$WORK/slurm" --slurm "$WORK/slurm.out" ||
        FAILURES+=("the SLURM run's outputs")
fi

# 4. Cluster down
if ((OURS)); then stop_cluster; fi

# 5. The same config locally, for the comparison (skipped when the cluster part failed).
if ((${#FAILURES[@]} == 0)); then
    mkdir -p "$WORK/local"
    cp "$TINY" "$WORK/local/config.yaml"
    say "local run: snakemake --directory $WORK/local --cores 2"
    run_snakemake "$LIMIT_S" "$WORK/local.out" --directory "$WORK/local" --cores 2
    TIMES[local run]=$RUN_S
    if ((RUN_RC != 0)); then
        FAILURES+=("the local run exited $RUN_RC")
        tail -40 "$WORK/local.out"
    else
        "$PYTHON" -W ignore "$REPO/tests/cluster/check_outputs.py" "$WORK/local" || FAILURES+=("the local run's outputs")
    fi
fi

say "times (s):"
for step in "cluster up" "SLURM run" "failure test" "cluster down" "local run"; do
    if [[ -n ${TIMES[$step]:-} ]]; then printf '  %-14s %7s\n' "$step" "${TIMES[$step]}"; fi
done
printf '  %-14s %7s\n' "whole test" "$(since "$TEST_START")"
if [[ -n ${TIMES[SLURM run]:-} && -n ${TIMES[local run]:-} ]]; then
    say "tiny end-to-end run: $(awk -v s="${TIMES[SLURM run]}" -v l="${TIMES[local run]}" \
        'BEGIN { printf "%.0f s under SLURM vs %.0f s locally (x%.1f)", s, l, s / l }')"
fi
if ((${#FAILURES[@]})); then
    say "FAILED: ${FAILURES[*]}"
    exit 1
fi
say "passed: every rule ran as a SLURM job, outputs and summary complete, a failing job fails the run"
