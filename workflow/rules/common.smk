# Shared by every rule file: config validation (the package's schema), result paths, wildcard constraints.
import os
import shutil
import sys
from pathlib import Path

from snakemake.utils import validate

from graphprune.config import config_from_dict, write_resolved_config
from graphprune.paths import ResultPaths


validate(config, schema="../schemas/config.schema.yaml")

# The CLI reads this file: the config exactly as merged here from config.yaml, --configfile and --config.
RESOLVED_CONFIG = write_resolved_config(config, ".snakemake/graphprune")
GRAPHPRUNE_CONFIG = config_from_dict(config, source=RESOLVED_CONFIG)
EXPERIMENTS = list(GRAPHPRUNE_CONFIG.experiments)
RESULTS = ResultPaths(GRAPHPRUNE_CONFIG.results_dir, "{experiment}")
# The CLI installed next to the Python running Snakemake, so an un-activated .venv/bin/snakemake works.
GRAPHPRUNE = shutil.which("graphprune", path=str(Path(sys.executable).parent)) or "graphprune"


# Jobs that train or score networks declare a `gpu` resource only where a GPU may be used: the profile runs one
# such job at a time there, while a CPU-only machine runs them side by side with `threads` torch threads each.
# Pretraining is one job that may use the whole machine: a local run caps it at --cores. Not `workflow.cores`,
# which raises under the SLURM executor (no --cores there; the profile's set-threads decides).
ALL_CORES = os.cpu_count() or 1
GPU_JOBS = {"cuda": 1, "cpu": 0}.get(GRAPHPRUNE_CONFIG.device, int(shutil.which("nvidia-smi") is not None))


wildcard_constraints:
    experiment=r"[^/]+",
    method=r"[^/]+",
    target=r"[^/]+",
    seed=r"\d+",


def pretrain_hash(wildcards):
    """A rule param: Snakemake reruns the job exactly when the experiment's baseline would change."""
    return GRAPHPRUNE_CONFIG.experiment(wildcards.experiment).pretrain_hash
