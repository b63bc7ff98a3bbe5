"""The whole pipeline through real Snakemake on a tiny digits config, then partial reruns.

One module-scoped run (pretrain 2 epochs, l1_uniform, and random_search and gat_ppo with 32 evaluations each,
1-epoch fine-tunes, report) is checked for the summary table, equal search budgets, the figures,
`snakemake --report`, and a no-op dry run; dry runs then check that asking for one result plans only its
upstream chain, that changing one method's settings replans only that method, and that adding a seed or a
variant plans only its own jobs.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from graphprune.paths import REPORT_FIGURES, ResultPaths, figure, report_html, summary_csv

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
EXPERIMENT = "tiny-digits"
METHODS = ["l1_uniform", "random_search", "gat_ppo"]
SEARCH_METHODS = ["random_search", "gat_ppo"]
EVALUATIONS = 32
TARGET = "flops0.5"
# The whole DAG must stay this fast: it runs in CI.
PIPELINE_SECONDS = 300
TINY_CONFIG = {
    "results_dir": "results",
    "device": "cpu",
    "experiments": {EXPERIMENT: {
        "dataset": {"name": "digits", "search_size": 300},
        "model": {"name": "resnet20"},
        "pretrain": {"epochs": 2, "batch_size": 64, "lr": 0.1},
        "finetune": {"epochs": 1, "batch_size": 64, "lr": 0.01},
        "targets": [TARGET],
        "methods": METHODS,
        "seeds": [0],
        "search": {"evaluations": EVALUATIONS,
                   "methods": {"gat_ppo": {"episodes_per_iteration": 16, "num_envs": 4, "update_repeats": 4}}},
    }},
}


def snakemake(workdir: Path, *args: str, timeout: float = 600) -> str:
    """Run the repository's Snakefile in `workdir` (whose config.yaml it reads); returns stdout + stderr."""
    completed = subprocess.run(
        [str(SNAKEMAKE), "-s", str(REPO_ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2", *args],
        cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # two jobs share two cores
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-5000:]
    return output


def planned_jobs(workdir: Path, *targets: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job `snakemake -n` plans for `targets` (default: rule all)."""
    jobs: list[tuple[str, dict[str, str]]] = []
    for line in snakemake(workdir, "-n", *targets).splitlines():
        line = line.strip()
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line):
            jobs.append((match.group(1), {}))
        elif line.startswith("wildcards:") and jobs:
            jobs[-1][1].update(item.strip().split("=", 1) for item in line[len("wildcards:"):].split(","))
    return jobs


def write_config(workdir: Path, config: dict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, float]:
    """A workdir where the whole pipeline ran on the tiny config, and how long it took."""
    workdir = tmp_path_factory.mktemp("pipeline")
    write_config(workdir, TINY_CONFIG)
    started = time.perf_counter()
    snakemake(workdir)
    return workdir, time.perf_counter() - started


def test_pipeline_runs_end_to_end_and_reports(finished_run):
    workdir, seconds = finished_run
    assert seconds < PIPELINE_SECONDS, f"the tiny pipeline took {seconds:.0f} s"
    results = workdir / "results"
    paths = ResultPaths(str(results), EXPERIMENT)
    baseline_top1 = json.loads(Path(paths.baseline_metrics()).read_text())["test_top1"]

    summary = pd.read_csv(summary_csv(str(results)), float_precision="round_trip")
    assert sorted(zip(summary["method"], summary["target"], strict=True)) == sorted((m, TARGET) for m in METHODS)
    assert set(summary["experiment"]) == {EXPERIMENT} and (summary["n"] == 1).all()
    for row in summary.to_dict("records"):
        for ratio in ("flops_ratio", "params_ratio"):
            assert 0 < row[ratio] <= 1
        assert row["flops_ratio"] <= 0.5 + 1e-9
        for accuracy in ("search_top1", "test_top1_pruned", "test_top1_finetuned"):
            assert 0 <= row[accuracy] <= 1
        assert abs(row["delta_top1"] - (row["test_top1_finetuned"] - baseline_top1)) <= 1e-9
        assert row["latency_ratio_b1"] > 0 and row["latency_ratio_b64"] > 0
        assert row["search_seconds"] > 0
        # Searches chose among their finalists on held-out search images; a one-shot method has none.
        assert pd.isna(row["reselect_top1"]) == (row["method"] not in SEARCH_METHODS)
        assert row["search_drop"] == pytest.approx(row["search_top1"] - row["test_top1_pruned"], abs=1e-12)
        # The table repeats what the stages measured: cost from the search record, accuracy from fine-tuning.
        record = json.loads(Path(paths.search_record(row["method"], TARGET, 0)).read_text())
        metrics = json.loads(Path(paths.finetuned_metrics(row["method"], TARGET, 0)).read_text())
        assert row["flops_ratio"] == pytest.approx(record["flops_ratio"], abs=1e-12)
        assert row["test_top1_finetuned"] == metrics["test_top1_finetuned"]
        assert metrics["recipe"]["epochs"] == 1 and metrics["epochs"] == 1
        history = Path(paths.finetuned_history(row["method"], TARGET, 0)).read_text().splitlines()
        assert len(history) == 1 + 1
    # One search budget: every search method scored exactly the configured number of distinct masks.
    masks = summary.set_index("method")["masks_evaluated"]
    assert all(masks[m] == EVALUATIONS for m in SEARCH_METHODS) and masks["l1_uniform"] == 0

    for name in REPORT_FIGURES:
        png = Path(figure(str(results), name)).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000, name

    html = report_html(str(results))
    snakemake(workdir, "--report", html)
    text = Path(html).read_text(errors="replace")
    assert all(name in text for name in REPORT_FIGURES)

    assert planned_jobs(workdir) == [], "a finished pipeline must have nothing left to do"


def test_one_result_plans_only_its_upstream_chain(tmp_path):
    write_config(tmp_path, TINY_CONFIG)
    target = ResultPaths("results", EXPERIMENT).finetuned_metrics("gat_ppo", TARGET, 0)
    jobs = planned_jobs(tmp_path, target)
    assert sorted(rule for rule, _ in jobs) == ["finetune", "graph", "pretrain", "search"]
    assert all(wildcards.get("method", "gat_ppo") == "gat_ppo" for _, wildcards in jobs)


def test_changing_one_method_replans_only_that_method(finished_run, tmp_path):
    workdir, _ = finished_run
    changed = copy.deepcopy(TINY_CONFIG)
    changed["experiments"][EXPERIMENT]["search"]["methods"]["gat_ppo"]["lr"] = 0.002
    write_config(workdir, changed)
    try:
        jobs = planned_jobs(workdir)
    finally:
        write_config(workdir, TINY_CONFIG)
    assert sorted(rule for rule, _ in jobs) == ["all", "finetune", "report", "search"]
    assert {wildcards["method"] for rule, wildcards in jobs if rule in ("search", "finetune")} == {"gat_ppo"}


def test_adding_a_seed_or_a_variant_plans_only_its_own_jobs(finished_run):
    workdir, _ = finished_run
    changed = copy.deepcopy(TINY_CONFIG)
    experiment = changed["experiments"][EXPERIMENT]
    experiment["seeds"] = [0, 1]
    experiment["variants"] = {"gat_ppo_mlp": {"method": "gat_ppo", "settings": {"policy": {"encoder": "mlp"}}}}
    experiment["methods"] = [*METHODS, "gat_ppo_mlp"]
    write_config(workdir, changed)
    try:
        jobs = planned_jobs(workdir)
    finally:
        write_config(workdir, TINY_CONFIG)
    runs = {(w["method"], w["seed"]) for rule, w in jobs if rule in ("search", "finetune")}
    # seed 1 of every method, both seeds of the new variant, and nothing of seed 0 of the existing methods
    assert runs == {*((m, "1") for m in METHODS), ("gat_ppo_mlp", "0"), ("gat_ppo_mlp", "1")}
    assert sorted({rule for rule, _ in jobs}) == ["all", "finetune", "report", "search"]


def test_a_shared_agent_is_trained_once_and_prunes_with_few_evaluations(finished_run):
    """An agent trained on the tiny experiment's baseline (one round), then method gat_ppo_transfer with 4
    evaluations: the plan holds one train_agent job before the transfer search, and both run for real."""
    workdir, _ = finished_run
    changed = copy.deepcopy(TINY_CONFIG)
    changed["agents"] = {"tiny-agent": {
        "experiments": [EXPERIMENT], "budgets": ["flops0.4", TARGET], "iterations": 1,
        "settings": {"episodes_per_iteration": 8, "num_envs": 4, "update_repeats": 4}}}
    experiment = changed["experiments"][EXPERIMENT]
    experiment["variants"] = {"gat_ppo_transfer_k4": {"method": "gat_ppo_transfer", "settings": {"agent": "tiny-agent"},
                                                      "evaluations": 4}}
    experiment["methods"] = [*METHODS, "gat_ppo_transfer_k4"]
    write_config(workdir, changed)
    record_path = ResultPaths("results", EXPERIMENT).search_record("gat_ppo_transfer_k4", TARGET, 0)
    try:
        jobs = planned_jobs(workdir, record_path)
        assert sorted(rule for rule, _ in jobs) == ["search", "train_agent"]
        snakemake(workdir, record_path)
    finally:
        write_config(workdir, TINY_CONFIG)
    agent = json.loads((workdir / "results/agents/tiny-agent/agent.json").read_text())
    assert agent["episodes"] == 2 * 8 and agent["budgets"] == ["flops0.4", TARGET]
    record = json.loads((workdir / record_path).read_text())
    assert record["masks_evaluated"] == 4 == record["evaluations"] and record["flops_ratio"] <= 0.5 + 1e-9
    assert record["agent"] == "results/agents/tiny-agent/agent.pt"
    assert (workdir / "logs/agents/tiny-agent.log").is_file()


@pytest.mark.parametrize(("change", "message"), [
    ({"pretrain": {"epochs": 0}}, r"experiments\.tiny-digits\.pretrain\.epochs: 0 is less than the minimum of 1"),
    ({"search": {"methods": {"gat_ppo": {"episodes_per_iteraton": 4}}}}, r"unknown setting\(s\) episodes_per_iteraton"),
])
def test_a_config_error_is_its_message_alone(tmp_path, change, message):
    config = copy.deepcopy(TINY_CONFIG)
    config["experiments"][EXPERIMENT].update(change)
    write_config(tmp_path, config)
    completed = subprocess.run([str(SNAKEMAKE), "-s", str(REPO_ROOT / "Snakefile"), "-d", str(tmp_path), "-n"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode != 0
    assert re.search(message, completed.stderr), completed.stderr
    assert 'File "' not in completed.stderr and "Traceback" not in completed.stderr  # no frame list
