#!/usr/bin/env bash
# Job: prove that a rule failing inside a SLURM job fails the Snakemake run and names the rule.
#   tests/cluster/test_failure.sh [WORKDIR]     (a running test cluster is needed: tests/cluster/slurm.sh up)
# Runs a one-experiment config whose CIFAR-10 folder does not exist (download off) through
# `snakemake --executor slurm`: the config is valid, so the pretrain job is submitted with sbatch and then
# exits 2 on the cluster. Asserts Snakemake exits non-zero (not by timeout), reports "Error in rule pretrain"
# with the failed SLURM job id, and that the rule's log says why. Uses WORKDIR (default: a temporary folder,
# removed afterwards); make test-cluster runs it next to the end-to-end run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

LIMIT_S=${FAILURE_TEST_LIMIT_S:-240}
if [[ $# -ge 1 ]]; then
    WORK=$1
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d /tmp/graphprune-cluster-failure.XXXXXX)
    trap 'rm -rf "$WORK"' EXIT
fi
MISSING_ROOT=$WORK/no-such-dataset-folder

cat >"$WORK/config.yaml" <<EOF
# Written by tests/cluster/test_failure.sh: valid, but the dataset folder does not exist.
results_dir: results
device: cpu
experiments:
  missing-cifar10:
    dataset: {name: cifar10, root: $MISSING_ROOT, download: false}
    model: {name: resnet20}
    pretrain: {epochs: 1}
    targets: [flops0.5]
    methods: [l1_uniform]
    finetune: {epochs: 1}
EOF

say "failure test: a pretrain job that must fail on the cluster (dataset root $MISSING_ROOT is missing)"
mapfile -t PROFILE < <(slurm_profile_args)
run_snakemake "$LIMIT_S" "$WORK/snakemake.out" --directory "$WORK" "${PROFILE[@]}"

problems=()
if ((RUN_RC == 0)); then
    problems+=("snakemake exited 0 although the pretrain job failed")
elif ((RUN_RC == 124 || RUN_RC == 137)); then
    problems+=("snakemake did not finish within ${LIMIT_S}s")
fi
grep -q '^Error in rule pretrain:' "$WORK/snakemake.out" ||
    problems+=("the output does not name the failed rule ('Error in rule pretrain:')")
failed_job=$(sed -n "s/.*SLURM-job '\([0-9_]*\)' failed.*/\1/p" "$WORK/snakemake.out" | head -1)
[[ -n $failed_job ]] || problems+=("the output does not report a failed SLURM job id")
grep -q 'has been submitted with SLURM jobid' "$WORK/snakemake.out" ||
    problems+=("the pretrain job was not submitted with sbatch")
rule_log=$WORK/logs/missing-cifar10/pretrain.log
grep -q 'cifar10 not found' "$rule_log" 2>/dev/null ||
    problems+=("the rule's log $rule_log does not give the reason ('cifar10 not found')")

if ((${#problems[@]})); then
    for problem in "${problems[@]}"; do say "FAIL: $problem"; done
    say "snakemake output ($WORK/snakemake.out), last 40 lines:"
    tail -40 "$WORK/snakemake.out"
    exit 1
fi
say "failure test passed in ${RUN_S}s: snakemake exit $RUN_RC, 'Error in rule pretrain', SLURM job $failed_job FAILED"
say "  reason from $rule_log: $(grep -m1 -o 'cifar10 not found under [^ ]*' "$rule_log")"
