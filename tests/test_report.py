"""The report stage on hand-written result files: aggregation over seeds, computed deltas, tables, figures."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from graphprune.config import config_from_dict
from graphprune.errors import GraphpruneError
from graphprune.paths import REPORT_FIGURES, figure
from graphprune.stages.report import (
    KEYS,
    VALUES,
    best_method_tests,
    collect_runs,
    learning_measures,
    summarize,
    summary_markdown,
    write_report,
)

BASELINE_TOP1 = 0.9


def finetuned_metrics(method: str, top1: float, seed: int = 0) -> dict:
    return {"seed": seed, "flops_ratio": 0.48, "params_ratio": 0.5, "search_top1": 0.8, "test_top1_pruned": 0.7,
            "test_top1_finetuned": top1, "latency_ratio_b1": 0.8, "latency_ratio_b64": 0.6,
            "search_seconds": 3.0, "masks_evaluated": 64 if method == "gat_ppo" else 0}


def write_json(path: str, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data))


@pytest.fixture
def finished_results(tiny_section, tmp_path):
    """A config with two methods on one target and two seeds, and the files every stage before the report
    writes: gat_ppo is 3 points better after fine-tuning on both seeds (+- 0.2)."""
    section = {**tiny_section, "targets": ["flops0.5"], "methods": ["l1_uniform", "gat_ppo"], "seeds": [0, 1]}
    config = config_from_dict({"results_dir": str(tmp_path / "results"), "experiments": {"tiny": section}})
    paths = config.paths("tiny")
    write_json(paths.baseline_metrics(), {"test_top1": BASELINE_TOP1, "flops": 2_000_000, "params": 250_000})
    for method, top1 in (("l1_uniform", 0.85), ("gat_ppo", 0.88)):
        for seed, noise in ((0, -0.002), (1, 0.002)):
            write_json(paths.finetuned_metrics(method, "flops0.5", seed), finetuned_metrics(method, top1 + noise, seed))
            write_json(paths.search_record(method, "flops0.5", seed), {
                "group_roots": ["layer2.conv1", "layer10.conv1", "conv1"], "group_sizes": [16, 32, 8],
                "kept_per_group": [8, 16 - 8 * seed, 8]})
            if method == "gat_ppo":
                log = pd.DataFrame({"episode": range(20), "search_top1": [0.1 * ((i + seed) % 7) for i in range(20)]})
                log.to_csv(paths.search_log(method, "flops0.5", seed), index=False)
                iterations = pd.DataFrame({
                    "iteration": range(4), "sampled_mean": [0.5, 0.6, 0.7, 0.75], "sampled_std": [0.1] * 4,
                    "best_search_top1": [0.6, 0.7, 0.8, 0.8], "greedy_search_top1": [0.2, 0.5, 0.7, 0.79],
                    "multiplier": [0.0, 1.0, 0.5, 0.2], "repaired_share": [0.8, 0.5, 0.2, 0.05]})
                iterations.to_csv(paths.search_iterations(method, "flops0.5", seed), index=False)
    return config


def test_report_writes_tables_and_figures_with_computed_delta(finished_results):
    written = write_report(finished_results)
    summary = pd.read_csv(written.summary_csv)
    assert list(summary.columns[:len(KEYS) + len(VALUES)]) == KEYS + VALUES
    assert list(summary["method"]) == ["l1_uniform", "gat_ppo"]  # config order
    for row in summary.to_dict("records"):
        assert row["delta_top1"] == pytest.approx(row["test_top1_finetuned"] - BASELINE_TOP1, abs=1e-12)
        assert row["n"] == 2 and row["flops_ratio_std"] == 0
        assert row["delta_top1_std"] == pytest.approx(0.002 * math.sqrt(2))
    markdown = Path(written.summary_md).read_text()
    # test columns first, in percent; a tie (pruned) is shown in bold for the first method, never as significant;
    # the drop is search minus test pruned (80 - 70); no reselection in these results: n/a columns
    assert ("| gat_ppo | flops0.5 | 2 | 70.00 ± 0.00 | **88.00 ± 0.28*** | -2.00 ± 0.28 | 0.480 ± 0.000 | "
            "0.500 ± 0.000 | 80.00 ± 0.00 | n/a | +10.00 ± 0.00 | n/a | 0.80 ± 0.00 | 0.60 ± 0.00 | 3.0 ± 0.0 | "
            "64 ± 0 |") in markdown.splitlines()
    assert "| flops0.5 | finetuned | best vs runner-up | gat_ppo | l1_uniform | +3.00 |" in markdown
    assert "| flops0.5 | finetuned | gat_ppo vs best rival | gat_ppo | l1_uniform | +3.00 |" in markdown
    assert set(written.significance["metric"]) == {"test_top1_pruned", "test_top1_finetuned"}  # never search
    best = written.significance[written.significance["comparison"] == "best vs runner-up"].set_index("stage")
    assert best.loc["finetuned", "best"] == "gat_ppo" and best.loc["finetuned", "significant"]
    assert math.isnan(best.loc["pruned", "p_value"]) and not best.loc["pruned", "significant"]
    for name in REPORT_FIGURES:
        assert Path(figure(finished_results.results_dir, name)).read_bytes().startswith(b"\x89PNG")


def test_runs_of_several_seeds_are_averaged():
    runs = pd.DataFrame([
        {"experiment": "e", "method": "m", "target": "flops0.5", "seed": seed,
         **{name: 0.5 for name in VALUES}, "test_top1_finetuned": top1, "delta_top1": top1 - 0.9}
        for seed, top1 in ((0, 0.8), (1, 0.9), (2, 1.0))
    ])
    summary = summarize(runs)
    assert len(summary) == 1 and summary.loc[0, "n"] == 3
    assert summary.loc[0, "test_top1_finetuned"] == pytest.approx(0.9)
    assert summary.loc[0, "test_top1_finetuned_std"] == pytest.approx(0.1)  # sample std (ddof=1)
    assert summary.loc[0, "flops_ratio_std"] == 0
    markdown = summary_markdown(summary, {"e": {"test_top1": 0.9, "flops": 1e6, "params": 1e3}},
                                best_method_tests(runs))
    assert "90.00 ± 10.00" in markdown


def test_welch_test_separates_a_real_lead_from_seed_noise():
    def runs_of(values_by_method):
        return pd.DataFrame([
            {"experiment": "e", "method": method, "target": "flops0.3", "seed": seed,
             **{name: 0.5 for name in VALUES}, "test_top1_finetuned": value}
            for method, values in values_by_method.items() for seed, value in enumerate(values)
        ])

    clear = best_method_tests(runs_of({"a": [0.80, 0.81, 0.79], "b": [0.90, 0.91, 0.89], "c": [0.1, 0.1, 0.1]}))
    assert set(clear["comparison"]) == {"best vs runner-up"}  # no gat_ppo here: no agent comparisons
    row = clear.set_index("stage").loc["finetuned"]
    assert (row["best"], row["runner_up"]) == ("b", "a") and row["significant"]
    # Welch's t by hand: difference 0.1, both sample variances 1e-4 -> t = 0.1 / sqrt(2e-4 / 3) = 12.25, df = 4
    assert row["p_value"] == pytest.approx(2.56e-4, rel=0.02)
    noisy = best_method_tests(runs_of({"a": [0.80, 0.90, 0.70], "b": [0.82, 0.72, 0.92]}))
    row = noisy.set_index("stage").loc["finetuned"]
    assert row["best"] == "b" and 0.05 < row["p_value"] <= 1 and not row["significant"]


def test_the_agent_is_set_against_its_best_rival_and_each_of_its_variants():
    runs = pd.DataFrame([
        {"experiment": "e", "method": method, "target": "flops0.3", "seed": seed, **{name: 0.5 for name in VALUES},
         "test_top1_pruned": value + 0.01 * seed}
        for method, value in (("gat_ppo", 0.80), ("gat_ppo_prior_only", 0.70), ("gat_ppo_mlp", 0.90),
                              ("depgraph", 0.75), ("l1_uniform", 0.60))
        for seed in range(3)
    ])
    tests = best_method_tests(runs)
    pruned = tests[tests["stage"] == "pruned"].set_index("comparison")
    assert pruned.loc["best vs runner-up", ["best", "runner_up"]].tolist() == ["gat_ppo_mlp", "gat_ppo"]
    # the best rival is the best method that is not a gat_ppo variant
    assert pruned.loc["gat_ppo vs best rival", ["best", "runner_up"]].tolist() == ["gat_ppo", "depgraph"]
    assert pruned.loc["gat_ppo vs gat_ppo_prior_only", "best_mean"] - pruned.loc[
        "gat_ppo vs gat_ppo_prior_only", "runner_up_mean"] == pytest.approx(0.10)
    assert pruned.loc["gat_ppo vs gat_ppo_mlp", "runner_up"] == "gat_ppo_mlp"  # every variant that ran, by name
    assert [c for c in pruned.index if c.startswith("gat_ppo vs gat_ppo")] == [
        "gat_ppo vs gat_ppo_mlp", "gat_ppo vs gat_ppo_prior_only"]


def test_a_missing_result_names_the_command_that_writes_it(finished_results):
    Path(finished_results.paths("tiny").finetuned_metrics("gat_ppo", "flops0.5", 1)).unlink()
    with pytest.raises(GraphpruneError,
                       match="graphprune finetune --experiment tiny --method gat_ppo --target flops0.5 --seed 1"):
        collect_runs(finished_results)


def test_learning_measures_read_collapse_repair_and_the_greedy_gap_from_the_iterations():
    # 8 iterations: the first quarter (2) is excluded from the collapse; the last quarter is the last 2.
    iterations = pd.DataFrame({
        "sampled_mean": [0.5, 0.9, 0.7, 0.95, 0.8, 0.9, 0.6, 0.93],  # after the first quarter: 0.95 - 0.6 = 0.35
        "repaired_share": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.25, 0.0],
        "multiplier": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 2.75],
    })
    measures = learning_measures(iterations, {"search_top1": 0.96, "greedy_policy_search_top1": 0.91})
    assert measures["greedy_gap"] == pytest.approx(0.05)
    assert measures["collapse_drop"] == pytest.approx(0.35)
    assert measures["repaired_last_quarter"] == pytest.approx(0.125)
    assert measures["multiplier"] == 2.75
    assert (measures["sampled_first"], measures["sampled_last"]) == (0.5, 0.93)


def test_the_accuracy_figure_plots_against_the_resource_the_budgets_bound():
    from graphprune.stages.report import accuracy_vs_flops_figure, budget_axis

    def summary(targets):
        return pd.DataFrame([{"experiment": "e", "method": "m", "target": t, "flops_ratio": 0.4, "params_ratio": r,
                              "test_top1_finetuned": 0.9, "test_top1_finetuned_std": 0.0, "test_top1_pruned": 0.8}
                             for t, r in zip(targets, (0.5, 0.3), strict=False)])

    assert budget_axis(summary(["params0.5", "params0.3"])) == ("params_ratio", "params")
    assert budget_axis(summary(["flops0.5", "params0.3"])) == ("flops_ratio", "FLOPs")  # mixed: FLOPs
    assert budget_axis(summary(["latency0.5"])) == ("flops_ratio", "FLOPs")  # no predicted-latency column
    figure_ = accuracy_vs_flops_figure(summary(["params0.5", "params0.3"]), {"e": {"test_top1": 0.95}}, {"m": "C0"})
    ax = figure_.axes[0]
    assert ax.get_xlabel() == "params kept (pruned / baseline)"
    assert sorted(ax.lines[0].get_xdata()) == [0.3, 0.5]
