"""Make cached pipeline outputs from a DVC remote count as up to date for Snakemake (`graphprune restore`).

In a fresh clone (repository root), instead of recomputing: `dvc pull` fetches results/ and logs/,
`dvc status` checks that they were made from exactly this checkout's code and config, and
`snakemake --touch --forceall --cores 1` rewrites their file times in DAG order and records Snakemake's
metadata (code, params) for every job. Git and DVC do not keep file times, so without the last step
`snakemake -n` may want to rerun whatever was restored a moment after its inputs.
This module only drives the `dvc` and `snakemake` executables; it computes nothing itself.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from graphprune.errors import GraphpruneError

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20


def restore(repo: Path, *, remote: str | None = None, configfile: str | None = None) -> dict[str, float]:
    """Pull, check and touch the pipeline outputs of the repository at `repo`; returns seconds per step."""
    for required in ("dvc.yaml", "Snakefile"):
        if not (repo / required).is_file():
            raise GraphpruneError(f"{repo} has no {required}: run `graphprune restore` from the root of a "
                                  "graphprune repository (the folder holding dvc.yaml and Snakefile)")
    if configfile is not None and not (repo / configfile).is_file():
        raise GraphpruneError(f"config file {configfile} does not exist (relative to {repo})")
    dvc, snakemake = tool("dvc"), tool("snakemake")
    seconds = {}

    started = time.perf_counter()
    _check(repo, [dvc, "pull", *(["--remote", remote] if remote else [])],
           "check that the remote is reachable (`dvc remote list`; override its url on this machine with "
           "`dvc remote modify --local <name> url <path>`) and that `dvc push` was run for this commit")
    seconds["pull"] = time.perf_counter() - started

    started = time.perf_counter()
    status = _check(repo, [dvc, "status", "--json"], "check that dvc.lock is committed (`dvc repro` writes it) and that `dvc pull` completed")
    changes = json.loads(status.stdout or "{}")
    if changes:
        # Touching now would record the changed code or config as the one these results came from, and
        # Snakemake would never rerun the jobs they affect.
        raise GraphpruneError(
            f"`dvc status` says this checkout differs from the one the cached results were made with: "
            f"{json.dumps(changes)}. Restore from an unmodified checkout of a commit whose dvc.lock was pushed, "
            "or run `dvc repro` to recompute what changed."
        )
    seconds["status"] = time.perf_counter() - started

    started = time.perf_counter()
    _check(repo, [snakemake, "--touch", "--forceall", "--cores", "1",
                  *(["--configfile", configfile] if configfile else [])],
           "the pulled results do not cover every output of the workflow for this config; was it run "
           "with another --configfile?")
    seconds["touch"] = time.perf_counter() - started
    return seconds


def tool(name: str) -> str:
    """The executable `name` installed next to the running Python (an un-activated .venv works), else on PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise GraphpruneError(f"`{name}` is not installed next to {sys.executable} nor on PATH: install the "
                              "pinned requirements (`make .venv/.installed`) and run .venv/bin/graphprune")
    return found


def _check(repo: Path, command: list[str], advice: str) -> subprocess.CompletedProcess:
    """Run `command` in `repo`; a failure becomes a GraphpruneError with the command, its stderr tail, advice."""
    log.info("running %s", shlex.join(command))
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-STDERR_TAIL_LINES:])
        raise GraphpruneError(f"`{shlex.join(command)}` failed with exit status {result.returncode}:\n{tail}\n"
                              f"What to do: {advice}")
    return result
