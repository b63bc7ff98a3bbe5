# Shared by every rule file: config validation (the package's schema), result paths, wildcard constraints.
import os
import shutil
import sys
from pathlib import Path

from snakemake.utils import validate

from graphprune.config import CONFIG_FILE_VARIABLE, config_from_dict, write_resolved_config
from graphprune.errors import GraphpruneError
from graphprune.methods.index import search_priority
from graphprune.paths import ResultPaths, agent_log, agent_path


# The package's checks first: a user's mistake is one message with its key path, not a list of frames.
try:
    GRAPHPRUNE_CONFIG = config_from_dict(config, source="the config")
except GraphpruneError as error:
    sys.exit(f"graphprune: {error}")
validate(config, schema="../schemas/config.schema.yaml")


envvars:
    "PATH",


# Every job's `graphprune` command reads the config exactly as merged here from config.yaml, --configfile and
# --config (the CLI's default --config is $GRAPHPRUNE_CONFIG_FILE), and is the one installed next to the Python
# running Snakemake, so an un-activated .venv/bin/snakemake works. Both reach the jobs through the environment
# (SLURM jobs re-read this file), not as rule variables: neither the clone's location nor an unrelated config
# edit may rerun a job; each rule's hash param decides that.
os.environ[CONFIG_FILE_VARIABLE] = write_resolved_config(config, ".snakemake/graphprune")
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
EXPERIMENTS = list(GRAPHPRUNE_CONFIG.experiments)
RESULTS = ResultPaths(GRAPHPRUNE_CONFIG.results_dir, "{experiment}", GRAPHPRUNE_CONFIG.logs_dir)


# Jobs that train or score networks declare a `gpu` resource only where a GPU may be used: the profile runs one
# such job at a time there, while a CPU-only machine runs them side by side with `threads` torch threads each.
# Pretraining is one job that may use the whole machine: a local run caps it at --cores. Not `workflow.cores`,
# which raises under the SLURM executor (no --cores there; the profile's set-threads decides).
ALL_CORES = os.cpu_count() or 1
GPU_JOBS = {"cuda": 1, "cpu": 0}.get(GRAPHPRUNE_CONFIG.device, int(shutil.which("nvidia-smi") is not None))


wildcard_constraints:
    agent=r"[^/]+",
    experiment=r"[^/]+",
    method=r"[^/]+",
    target=r"[^/]+",
    seed=r"\d+",
