# Job: helpers shared by the cluster test scripts (sourced by run_pipeline.sh and test_failure.sh, not run).
# Sets REPO and SNAKEMAKE; slurm_profile_args, run_snakemake and since are used by both scripts.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SNAKEMAKE=$REPO/.venv/bin/snakemake
PYTHON=$REPO/.venv/bin/python

say() { printf '[cluster-test] %s\n' "$*"; }

# Seconds since the $EPOCHREALTIME value $1, one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# The profiles of a run on the test cluster: the real cluster profile (when it exists) under the test
# overlay. Snakemake 9 takes each top-level key from the workflow profile (the overlay) when it sets it, else
# from --profile; passing --workflow-profile also keeps profiles/default (local runs) out.
slurm_profile_args() {
    if [[ -f $REPO/profiles/slurm/config.yaml ]]; then
        printf '%s\n' --profile "$REPO/profiles/slurm"
    fi
    printf '%s\n' --workflow-profile "$REPO/profiles/slurm-local"
}

# run_snakemake <limit_s> <output file> <snakemake args...>: Snakemake from the repository root, bounded by
# `timeout -k 30 -s INT` (SIGINT makes Snakemake cancel its SLURM jobs; SIGTERM can leave it waiting for
# them). --foreground keeps Snakemake in our process group, so that the outer limit of make test-cluster
# (timeout -s INT) reaches it too. All output goes to the file. Sets RUN_RC and RUN_S (wall seconds); never
# fails itself.
run_snakemake() {
    local limit=$1 out=$2 start=$EPOCHREALTIME
    shift 2
    RUN_RC=0
    (cd "$REPO" && timeout --foreground -k 30 -s INT "$limit" "$SNAKEMAKE" "$@") >"$out" 2>&1 || RUN_RC=$?
    RUN_S=$(since "$start")
    if ((RUN_RC == 124 || RUN_RC == 137)); then
        say "snakemake ran past its limit of ${limit}s and was stopped (exit $RUN_RC); output: $out"
    fi
}
