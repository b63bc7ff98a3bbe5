"""The DVC cache round trip, end to end: run the pipeline, push its outputs, clone, restore, rerun nothing.

In temporary folders: a copy of this repository (tracked files plus untracked ones git does not ignore) with a
tiny two-experiment config becomes a fresh git repository; `dvc repro` runs Snakemake and `dvc push` stores
the outputs in a temporary remote; a `git clone` of it is restored with `graphprune restore`. Then
`snakemake -n` must have nothing to do, and editing one experiment's pretraining parameter must rerun exactly
that experiment's jobs and the cross-experiment ones, nothing of the other experiment.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from graphprune.cli import main
from graphprune.restore import tool

pytestmark = pytest.mark.slow

# Folders of the working tree that hold local state, not sources.
LOCAL_STATE = {".venv", "results", "logs", ".snakemake", ".dvc/tmp", ".dvc/cache"}
COMMAND_TIMEOUT_S = 300
JOB_HEADER = re.compile(r"^(?:local)?rule (\S+):$")


def test_pushed_results_restore_into_a_clone_with_nothing_to_rerun(tmp_path, repo_root, tiny_section,
                                                                   monkeypatch):
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    env = {
        **os.environ,
        # dvc.yaml's command is a bare `snakemake`: the one next to the running Python.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "GIT_AUTHOR_NAME": "graphprune test", "GIT_AUTHOR_EMAIL": "test@graphprune.invalid",
        "GIT_COMMITTER_NAME": "graphprune test", "GIT_COMMITTER_EMAIL": "test@graphprune.invalid",
    }
    dvc, snakemake = tool("dvc"), tool("snakemake")
    origin, clone, remote = tmp_path / "origin", tmp_path / "clone", tmp_path / "remote"

    copy_working_tree(repo_root, origin)
    write_tiny_config(origin / "config.yaml", tiny_section)
    run(["git", "init", "-q"], origin, env)
    run(["git", "add", "-A"], origin, env)
    run(["git", "commit", "-q", "-m", "tiny pipeline"], origin, env)
    run([dvc, "remote", "add", "--local", "scratch", str(remote)], origin, env)

    started = time.perf_counter()
    run([dvc, "repro"], origin, env)
    print(f"dvc repro of the tiny config: {time.perf_counter() - started:.1f} s")
    # Snakemake's log of that run lists every job of the workflow, in the format of a dry run.
    (run_log,) = (origin / ".snakemake" / "log").glob("*.snakemake.log")
    every_job = listed_jobs(run_log.read_text())
    assert {rule for rule, _, _ in every_job} >= {"pretrain", "graph", "all"}
    run(["git", "add", "dvc.lock"], origin, env)
    run(["git", "commit", "-q", "-m", "pipeline outputs"], origin, env)
    run([dvc, "push", "--remote", "scratch"], origin, env)

    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    assert not (clone / "results").exists()
    run([dvc, "remote", "add", "--local", "scratch", str(remote)], clone, env)
    monkeypatch.chdir(clone)
    started = time.perf_counter()
    assert main(["restore", "--remote", "scratch"]) == 0  # in-process: the CLI's imports are paid already
    print(f"graphprune restore: {time.perf_counter() - started:.1f} s")
    assert (clone / "results" / "tiny-a" / "baseline" / "model.pt").is_file()

    started = time.perf_counter()
    dry_run = run([snakemake, "-n"], clone, env)
    print(f"no-op snakemake -n: {time.perf_counter() - started:.1f} s")
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr
    assert listed_jobs(dry_run.stdout + dry_run.stderr) == set()

    config = yaml.safe_load((clone / "config.yaml").read_text())
    config["experiments"]["tiny-a"]["pretrain"]["lr"] /= 2
    (clone / "config.yaml").write_text(yaml.safe_dump(config))
    after_edit = run([snakemake, "-n"], clone, env)

    rerun = listed_jobs(after_edit.stdout + after_edit.stderr)
    assert rerun == {job for job in every_job if "experiment=tiny-b" not in job[2]}
    assert ("pretrain", "experiment=tiny-a") in {(rule, wildcards) for rule, _, wildcards in rerun}
    assert "Params have changed since last execution" in after_edit.stdout + after_edit.stderr


def copy_working_tree(repo: Path, destination: Path) -> None:
    """Copy what a commit of `repo` would hold now: tracked files and untracked ones git does not ignore."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], repo, os.environ)
    for name in sorted(set(filter(None, listed.stdout.split("\0")))):
        source = repo / name
        if any(name == part or name.startswith(part + "/") for part in LOCAL_STATE) or not os.path.lexists(source):
            continue  # local state, or a tracked file deleted in the working tree
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)  # the schema is a symlink into the package


def write_tiny_config(path: Path, section: dict) -> None:
    """Two independent experiments, one method and one budget: every rule of the workflow runs in seconds."""
    tiny = {**section, "methods": ["random"], "targets": ["flops0.5"], "finetune": {"epochs": 1, "lr": 0.01}}
    # Deep copies: shared sub-dicts would be written as YAML aliases, and editing one would edit both.
    experiments = {"tiny-a": copy.deepcopy(tiny), "tiny-b": {**copy.deepcopy(tiny), "seed": tiny["seed"] + 1}}
    path.write_text(yaml.safe_dump({"results_dir": "results", "device": "cpu", "experiments": experiments}))


def listed_jobs(snakemake_output: str) -> set[tuple[str, str, str]]:
    """(rule, outputs, wildcards) of every job listed in a Snakemake log or `snakemake -n` output."""
    jobs: list[dict[str, str]] = []
    in_job = False
    for line in snakemake_output.splitlines():
        header = JOB_HEADER.match(line)
        if header:
            jobs.append({"rule": header.group(1), "output": "", "wildcards": ""})
            in_job = True
        elif in_job and line.startswith("    "):  # the job's indented fields
            key, _, value = line.strip().partition(": ")
            if key in ("output", "wildcards"):
                jobs[-1][key] = value
        else:
            in_job = False
    return {(job["rule"], job["output"], job["wildcards"]) for job in jobs}


def run(command: list[str], cwd: Path, env) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert result.returncode == 0, f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result
