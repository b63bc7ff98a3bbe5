"""Result tables and figures of a whole config: the `report` stage of the pipeline.

Reads result files only (baseline and finetuned metrics.json, search/record.json, and search/log.csv where a
learning method wrote one) and writes results/summary.csv, summary.md and figures/*.png, each atomically.
It never loads a model or a dataset, and never types in a number another stage measured: delta_top1 is
computed here from the two accuracies. Rows of the same experiment, method and target from several seeds are
averaged (mean, sample std and n), and per experiment and target the best method's lead over the runner-up is
tested against seed noise (Welch's t-test), before and after fine-tuning.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from graphprune.atomic import atomic_write, atomic_write_text
from graphprune.errors import GraphpruneError
from graphprune.network.budget import METRICS, parse_target
from graphprune.paths import REPORT_FIGURES, figure, significance_csv, summary_csv, summary_md

if TYPE_CHECKING:
    from collections.abc import Iterator

    from graphprune.config import Config
    from graphprune.paths import ResultPaths

KEYS = ["experiment", "method", "target"]
# Summary columns after the keys, in table order; each is a mean over seeds, with `<name>_std` beside it.
# The headline first: test top-1 of the chosen network, pruned (BN recalibrated) and fine-tuned. search_top1 is
# the chosen mask's score on the search images, a maximum over every mask scored (biased up); reselect_top1 its
# score on held-out search images the search never scored (an unbiased estimate with one finalist, the
# default); the drops are those minus test top-1 pruned.
VALUES = ["test_top1_pruned", "test_top1_finetuned", "delta_top1", "flops_ratio", "params_ratio", "search_top1",
          "reselect_top1", "search_drop", "reselect_drop", "latency_ratio_b1", "latency_ratio_b64", "search_seconds",
          "masks_evaluated"]
COMPUTED = {"delta_top1", "search_drop", "reselect_drop"}
OPTIONAL = {"reselect_top1"}  # absent from runs without reselection (and from older results)
# Copied from finetuned/metrics.json as they are.
COPIED = [name for name in VALUES if name not in COMPUTED]

# summary.md: header and how each value is shown (accuracies in percent).
MARKDOWN_COLUMNS = {
    "test_top1_pruned": ("test top-1 % pruned", "{:.2f}"),
    "test_top1_finetuned": ("test top-1 % fine-tuned", "{:.2f}"), "delta_top1": ("Δ top-1 (pp)", "{:+.2f}"),
    "flops_ratio": ("FLOPs kept", "{:.3f}"), "params_ratio": ("params kept", "{:.3f}"),
    "search_top1": ("search top-1 % (max)", "{:.2f}"), "reselect_top1": ("held-out search %", "{:.2f}"),
    "search_drop": ("search − test (pp)", "{:+.2f}"), "reselect_drop": ("held-out − test (pp)", "{:+.2f}"),
    "latency_ratio_b1": ("latency b1", "{:.2f}"), "latency_ratio_b64": ("latency b64", "{:.2f}"),
    "search_seconds": ("search s", "{:.1f}"), "masks_evaluated": ("masks", "{:.0f}"),
}
PERCENT = {"search_top1", "reselect_top1", "search_drop", "reselect_drop", "test_top1_pruned", "test_top1_finetuned",
           "delta_top1"}
# Where methods are tested against each other: on the test split, before and after fine-tuning (never on the
# search scores the searches maximised).
RANKED = {"pruned": "test_top1_pruned", "finetuned": "test_top1_finetuned"}
# The agent against its own priors, where both ran: what PPO adds, what the channel prior adds, and what the
# contribution prior adds over the filter-L1 prior it replaced.
AGENT = "gat_ppo"
SIGNIFICANCE_LEVEL = 0.05


@dataclass(frozen=True)
class ReportFiles:
    summary: pd.DataFrame
    significance: pd.DataFrame
    summary_csv: str
    summary_md: str
    figures: list[str]


def write_report(config: Config) -> ReportFiles:
    """Write summary.csv, summary.md and the figures of every experiment x method x target of `config`."""
    runs = collect_runs(config)
    summary = summarize(runs)
    significance = best_method_tests(runs)
    root = config.results_dir
    csv_path, md_path = summary_csv(root), summary_md(root)
    atomic_write_text(summary.to_csv(index=False), csv_path)  # full precision: the table is data
    atomic_write_text(significance.to_csv(index=False), significance_csv(root))
    atomic_write_text(summary_markdown(summary, baselines(config), significance), md_path)
    palette = method_palette(runs["method"])
    drawings = {
        "accuracy_vs_flops": lambda: accuracy_vs_flops_figure(summary, baselines(config), palette),
        "search_curves": lambda: search_curves_figure(collect_search_logs(config), palette),
        "learning_curves": lambda: learning_curves_figure(collect_iterations(config), palette),
        "kept_channels": lambda: kept_channels_figure(collect_records(config), palette),
    }
    figures = []
    for name in REPORT_FIGURES:
        path = figure(root, name)
        _save_figure(drawings[name](), path)
        figures.append(path)
    return ReportFiles(summary, significance, csv_path, md_path, figures)


# ---------------------------------------------------------------------------------------------------------
# Reading results


def collect_runs(config: Config) -> pd.DataFrame:
    """One row per finished (experiment, method, target, seed): the COPIED metrics, baseline_test_top1,
    delta_top1 = test_top1_finetuned - baseline_test_top1, and the search-to-test drops (search_top1 or
    reselect_top1 minus test_top1_pruned)."""
    rows = []
    for name, experiment in config.experiments.items():
        paths = config.paths(name)
        baseline = _read_json(paths.baseline_metrics(), f"graphprune pretrain --experiment {name}")
        for method, target, seed in experiment.runs():
            metrics = _read_json(paths.finetuned_metrics(method, target, seed),
                                 f"graphprune finetune --experiment {name} {_run_arguments(method, target, seed)}")
            copied = {key: metrics.get(key) if key in OPTIONAL else metrics[key] for key in COPIED}
            held_out = float("nan") if copied["reselect_top1"] is None else copied["reselect_top1"]
            rows.append({
                "experiment": name, "seed": seed, "method": method, "target": target, **copied,
                "reselect_top1": held_out, "baseline_test_top1": baseline["test_top1"],
                "delta_top1": metrics["test_top1_finetuned"] - baseline["test_top1"],
                "search_drop": metrics["search_top1"] - metrics["test_top1_pruned"],
                "reselect_drop": held_out - metrics["test_top1_pruned"],
            })
    return pd.DataFrame(rows, columns=[*KEYS, "seed", *VALUES, "baseline_test_top1"])


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean of every VALUES column per (experiment, method, target), its sample std over seeds (`<name>_std`,
    empty with one seed) and the number of seeds `n`; rows in config order."""
    grouped = runs.groupby(KEYS, sort=False)
    mean = grouped[VALUES].mean()
    std = grouped[VALUES].std(ddof=1).add_suffix("_std")
    count = grouped.size().rename("n")
    return pd.concat([mean, count, std], axis=1).reset_index()


def best_method_tests(runs: pd.DataFrame) -> pd.DataFrame:
    """Per experiment, target and stage of RANKED (test top-1 pruned and fine-tuned), Welch's t-tests (two-sided)
    of per-seed accuracies: the method with the highest mean against the runner-up; where gat_ppo ran, gat_ppo
    against the best method that is not a gat_ppo variant (its strongest rival) and against each of its
    variants that ran (`gat_ppo_*`, by name: what PPO, its priors and its parts add). `significant` is p < SIGNIFICANCE_LEVEL; with fewer than two
    seeds on either side, or no spread at all, p is NaN and nothing is significant."""
    rows = []
    for (experiment, target), panel in runs.groupby(["experiment", "target"], sort=False):
        for stage, column in RANKED.items():
            means = panel.groupby("method", sort=False)[column].mean().sort_values(ascending=False, kind="stable")
            pairs = [("best vs runner-up", means.index[0], means.index[1] if len(means) > 1 else None)]
            if AGENT in means.index:
                rivals = [m for m in means.index if not m.startswith(AGENT)]
                pairs.append(("gat_ppo vs best rival", AGENT, rivals[0] if rivals else None))
                variants = sorted(m for m in means.index if m.startswith(f"{AGENT}_"))
                pairs += [(f"gat_ppo vs {variant}", AGENT, variant) for variant in variants]
            for comparison, first, second in pairs:
                p_value = _welch_p(panel, column, first, second)
                rows.append({
                    "experiment": experiment, "target": target, "stage": stage, "metric": column,
                    "comparison": comparison, "best": first, "best_mean": means[first], "runner_up": second,
                    "runner_up_mean": means[second] if second is not None else float("nan"),
                    "p_value": p_value, "significant": bool(p_value < SIGNIFICANCE_LEVEL),
                })
    columns = ["experiment", "target", "stage", "metric", "comparison", "best", "best_mean", "runner_up",
               "runner_up_mean", "p_value", "significant"]
    return pd.DataFrame(rows, columns=columns)


def _welch_p(panel: pd.DataFrame, column: str, first: str, second: str | None) -> float:
    from scipy.stats import ttest_ind  # only the report needs SciPy

    if second is None:
        return float("nan")
    a, b = (panel.loc[panel["method"] == m, column].to_numpy() for m in (first, second))
    if min(len(a), len(b)) >= 2 and (a.std() > 0 or b.std() > 0):
        return float(ttest_ind(a, b, equal_var=False).pvalue)
    return float("nan")


def baselines(config: Config) -> dict[str, dict[str, Any]]:
    """Baseline metrics.json per experiment name."""
    return {name: _read_json(config.paths(name).baseline_metrics(), f"graphprune pretrain --experiment {name}")
            for name in config.experiments}


def each_run(config: Config) -> Iterator[tuple[str, ResultPaths, str, str, int]]:
    """(experiment name, its paths, method, target, seed) of every run the config asks for."""
    for name, experiment in config.experiments.items():
        paths = config.paths(name)
        for method, target, seed in experiment.runs():
            yield name, paths, method, target, seed


def collect_records(config: Config) -> pd.DataFrame:
    """One row per (experiment, method, target, seed, channel group) from search/record.json: the group's root
    module, size and kept channels, groups in natural name order (close to depth order)."""
    rows = []
    for name, paths, method, target, seed in each_run(config):
        record = _read_json(paths.search_record(method, target, seed),
                            f"graphprune search --experiment {name} {_run_arguments(method, target, seed)}")
        groups = zip(record["group_roots"], record["group_sizes"], record["kept_per_group"], strict=True)
        for root, size, kept in sorted(groups, key=lambda group: _natural_key(group[0])):
            rows.append({"experiment": name, "method": method, "target": target, "seed": seed, "group": root,
                         "size": size, "kept": kept, "kept_fraction": kept / size})
    return pd.DataFrame(rows, columns=[*KEYS, "seed", "group", "size", "kept", "kept_fraction"])


def collect_search_logs(config: Config) -> pd.DataFrame:
    """Per-episode search accuracy of every search that wrote search/log.csv, with `best_search_top1` (the
    log's own best-so-far where it has one, else the running maximum)."""
    frames = []
    for name, paths, method, target, seed in each_run(config):
        path = Path(paths.search_log(method, target, seed))
        if not path.is_file():
            continue  # methods that do not learn write no log
        log = pd.read_csv(path)
        if log.empty or not {"episode", "search_top1"} <= set(log.columns):
            continue
        if "best_search_top1" not in log.columns:
            log["best_search_top1"] = log["search_top1"].cummax()
        frames.append(log[["episode", "search_top1", "best_search_top1"]].assign(
            experiment=name, method=method, target=target, seed=seed))
    columns = [*KEYS, "seed", "episode", "search_top1", "best_search_top1"]
    return pd.concat(frames)[columns] if frames else pd.DataFrame(columns=columns)


def collect_iterations(config: Config) -> pd.DataFrame:
    """Every row of every search/iterations.csv (the agent's per-iteration statistics), with its run's keys."""
    frames = []
    for name, paths, method, target, seed in each_run(config):
        path = Path(paths.search_iterations(method, target, seed))
        if path.is_file():
            frames.append(pd.read_csv(path).assign(experiment=name, method=method, target=target, seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEYS, "seed", "iteration"])


def learning_measures(iterations: pd.DataFrame, record: dict[str, Any]) -> dict[str, float]:
    """How one agent search learned, from its iterations.csv rows and search record (docs/AGENT.md): the best
    mask's and the final greedy policy's search accuracy and their gap; the largest drop of the per-iteration
    mean sampled accuracy below its running maximum after the first quarter of iterations (a collapse); in the
    last quarter, the share of episodes that needed repair and the multiplier at the end."""
    quarter = max(1, len(iterations) // 4)
    sampled = iterations["sampled_mean"]
    drop = float((sampled.cummax() - sampled).iloc[quarter:].max()) if len(sampled) > quarter else 0.0
    last = iterations.iloc[-quarter:]
    best, greedy = float(record["search_top1"]), float(record["greedy_policy_search_top1"])
    return {"best": best, "greedy": greedy, "greedy_gap": best - greedy, "sampled_first": float(sampled.iloc[0]),
            "sampled_last": float(sampled.iloc[-1]), "collapse_drop": drop,
            "repaired_last_quarter": float(last["repaired_share"].mean()),
            "multiplier": float(last["multiplier"].iloc[-1])}


def _run_arguments(method: str, target: str, seed: int) -> str:
    return f"--method {method} --target {target} --seed {seed}"


def _read_json(path: str, command: str) -> dict[str, Any]:
    if not Path(path).is_file():
        raise GraphpruneError(f"{path} does not exist; `{command}` writes it (or run the pipeline: snakemake)")
    return json.loads(Path(path).read_text())


def _natural_key(name: str) -> list:
    """'layer10.conv1' after 'layer2.conv1': digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


# ---------------------------------------------------------------------------------------------------------
# summary.md


def summary_markdown(summary: pd.DataFrame, baseline_metrics: dict[str, dict[str, Any]],
                     significance: pd.DataFrame) -> str:
    """One table per experiment, headed by its baseline; accuracies in percent, `mean ± std` over seeds; the
    best method per target and stage in bold (with * where its lead over the runner-up is significant), then
    the tests themselves."""
    lines = ["# Results", "",
             "The headline is the test top-1 of the network each method chose, pruned (BN statistics "
             "recalibrated) and after the same fine-tuning; Δ top-1 = fine-tuned minus baseline test top-1 "
             "(percentage points). Search top-1 is the chosen mask's score on the search images, a maximum over "
             "every mask scored and so biased up; held-out search is its score on search images the search never "
             "scored (free of that bias with search.reselect_candidates 1, the default); the two drops are those minus test top-1 pruned. Ratios are pruned / "
             "baseline; latency is the median of interleaved runs at batch 1 and 64. Mean ± std over the n seeds. "
             "Per target, the best pruned and fine-tuned test accuracy is in bold, with * where its lead over the "
             f"runner-up is larger than seed noise (Welch's t-test over seeds, p < {SIGNIFICANCE_LEVEL}); the "
             "tests below also set gat_ppo against its best rival and its own priors.", ""]
    for experiment, rows in summary.groupby("experiment", sort=False):
        baseline = baseline_metrics[experiment]
        tests = significance[significance["experiment"] == experiment]
        marks = {(t.target, t.metric, t.best): "*" if t.significant else "" for t in tests.itertuples()
                 if t.comparison == "best vs runner-up"}
        lines += [f"## {experiment}", "",
                  f"Baseline: test top-1 {100 * baseline['test_top1']:.2f} %, {baseline['flops'] / 1e6:.2f} M FLOPs "
                  f"(MACs), {baseline['params'] / 1e3:.1f} k params.", ""]
        header = ["method", "target", "n", *(label for label, _ in MARKDOWN_COLUMNS.values())]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows.itertuples(index=False):
            row = row._asdict()
            cells = [row["method"], row["target"], str(row["n"])]
            for name in MARKDOWN_COLUMNS:
                cell = _cell(row[name], row[f"{name}_std"], name)
                mark = marks.get((row["target"], name, row["method"]))
                cells.append(cell if mark is None else f"**{cell}**{mark}")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "| target | stage (test top-1) | comparison | first | second | difference (pp) | Welch p "
                  "| beyond seed noise |", "|---|---|---|---|---|---|---|---|"]
        for t in tests.itertuples():
            difference = 100 * (t.best_mean - t.runner_up_mean)
            p_text = "n/a" if np.isnan(t.p_value) else f"{t.p_value:.3g}"
            lines.append(f"| {t.target} | {t.stage} | {t.comparison} | {t.best} | {t.runner_up or '-'} | "
                         f"{difference:+.2f} | {p_text} | {'yes' if t.significant else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def _cell(mean: float, std: float, name: str) -> str:
    if np.isnan(mean):
        return "n/a"  # e.g. no held-out rescoring in this run
    scale = 100 if name in PERCENT else 1
    fmt = MARKDOWN_COLUMNS[name][1]
    text = fmt.format(scale * mean)
    if not np.isnan(std):
        text += " ± " + fmt.format(scale * std).lstrip("+")
    return text


# ---------------------------------------------------------------------------------------------------------
# Figures: plain matplotlib Figures (no pyplot, so no display backend or global state), drawn with seaborn.

sns.set_theme(style="whitegrid", context="notebook")
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]


def accuracy_vs_flops_figure(summary: pd.DataFrame, baseline_metrics: dict[str, dict[str, Any]],
                             palette: dict[str, Any]) -> Figure:
    """Fine-tuned test top-1 (filled markers; hollow: before fine-tuning) against the share kept of the resource
    the experiment's budgets bound (`budget_axis`), one panel per experiment, one line per method through its
    targets (error bars: std over seeds, where several); the dashed line and star mark the unpruned baseline."""
    experiments = list(dict.fromkeys(summary["experiment"]))
    figure_ = Figure(figsize=(8.5 * len(experiments), 4.8), layout="constrained")
    axes = figure_.subplots(1, len(experiments), squeeze=False)[0]
    for ax, experiment in zip(axes, experiments, strict=True):
        rows = summary[summary["experiment"] == experiment]
        column, label = budget_axis(rows)
        for position, (method, line) in enumerate(rows.groupby("method", sort=False)):
            line = line.sort_values(column)
            # Matplotlib gets plain arrays: errorbar on pandas objects trips a pandas deprecation.
            ax.errorbar(line[column].to_numpy(), 100 * line["test_top1_finetuned"].to_numpy(),
                        yerr=100 * line["test_top1_finetuned_std"].fillna(0).to_numpy(), color=palette[method],
                        marker=MARKERS[position % len(MARKERS)], markersize=8, capsize=3, label=method)
            ax.plot(line[column].to_numpy(), 100 * line["test_top1_pruned"].to_numpy(), linestyle="none",
                    marker=MARKERS[position % len(MARKERS)], markersize=8, markerfacecolor="none",
                    color=palette[method], alpha=0.7)
        baseline_top1 = 100 * baseline_metrics[experiment]["test_top1"]
        ax.axhline(baseline_top1, color="0.3", linestyle="--", linewidth=1)
        ax.plot([1.0], [baseline_top1], marker="*", markersize=14, color="0.2", linestyle="none", label="baseline")
        ax.plot([], [], marker="o", markerfacecolor="none", color="0.4", linestyle="none",
                label="hollow: before fine-tuning")
        ax.set(title=experiment, xlabel=f"{label} kept (pruned / baseline)", ylabel="test top-1 %")
        ax.set_xlim(0, 1.05)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a point
    return figure_


def budget_axis(rows: pd.DataFrame) -> tuple[str, str]:
    """(column, label) of the x-axis for `rows` (one experiment's summary): the metric all its targets bound
    (budget.METRICS: its `column` and `label`) where the rows carry that column, else FLOPs (a measured
    metric's records hold measured ratios under other names)."""
    metrics = {parse_target(target).metric for target in rows["target"]}
    if len(metrics) == 1:
        metric = METRICS[metrics.pop()]
        if metric.column in rows and rows[metric.column].notna().all():
            return metric.column, metric.label
    return METRICS["flops"].column, METRICS["flops"].label


def search_curves_figure(logs: pd.DataFrame, palette: dict[str, Any]) -> Figure:
    """Search-split accuracy per episode (dots, every seed) and best so far (line: mean over seeds) for every
    search that logged one; one panel per (experiment, target)."""
    if logs.empty:
        return _message_figure("No search logs: none of the methods run writes search/log.csv (gat_ppo does).")
    panels = list(dict.fromkeys(zip(logs["experiment"], logs["target"], strict=True)))
    figure_ = Figure(figsize=(7, 4.2 * len(panels)), layout="constrained")
    axes = figure_.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (experiment, target) in zip(axes, panels, strict=True):
        panel = logs[(logs["experiment"] == experiment) & (logs["target"] == target)]
        for method, curve in panel.groupby("method", sort=False):
            color = palette[method]
            ax.scatter(curve["episode"], 100 * curve["search_top1"], s=6, alpha=0.3, color=color, linewidths=0,
                       label=f"{method} (each episode's mask)")
            best = curve.groupby("episode")["best_search_top1"].mean()
            ax.plot(best.index.to_numpy(), 100 * best.to_numpy(), color=color, linewidth=2,
                    label=f"{method} (best so far, mean over seeds)")
        ax.set(title=f"{experiment}, {target}", xlabel="episode", ylabel="search top-1 %")
        ax.legend(fontsize="small", loc="lower right")
    return figure_


def learning_curves_figure(iterations: pd.DataFrame, palette: dict[str, Any]) -> Figure:
    """Per (experiment, target) row: sampled accuracy (mean, band: std) with best so far and greedy policy; the
    Lagrange multiplier; the share of repaired episodes; per iteration, one line per method, mean over seeds."""
    if iterations.empty:
        return _message_figure("No learning curves: no method run writes search/iterations.csv (gat_ppo does).")
    panels = list(dict.fromkeys(zip(iterations["experiment"], iterations["target"], strict=True)))
    figure_ = Figure(figsize=(16, 4.0 * len(panels)), layout="constrained")
    axes = figure_.subplots(len(panels), 3, squeeze=False)
    for row, (experiment, target) in zip(axes, panels, strict=True):
        panel = iterations[(iterations["experiment"] == experiment) & (iterations["target"] == target)]
        for method, curves in panel.groupby("method", sort=False):
            mean = curves.groupby("iteration").mean(numeric_only=True)
            x, color = mean.index.to_numpy(), palette[method]
            sampled, spread = 100 * mean["sampled_mean"].to_numpy(), 100 * mean["sampled_std"].to_numpy()
            row[0].plot(x, sampled, color=color, label=f"{method} sampled")
            row[0].fill_between(x, sampled - spread, sampled + spread, color=color, alpha=0.15, linewidth=0)
            row[0].plot(x, 100 * mean["best_search_top1"].to_numpy(), color=color, linestyle="--", label="best so far")
            row[0].plot(x, 100 * mean["greedy_search_top1"].to_numpy(), color=color, linestyle=":", marker=".",
                        label="greedy policy")
            row[1].plot(x, mean["multiplier"].to_numpy(), color=color, label=method)
            row[2].plot(x, 100 * mean["repaired_share"].to_numpy(), color=color, label=method)
        row[0].set(title=f"{experiment}, {target}", xlabel="iteration", ylabel="search top-1 %")
        row[1].set(title="Lagrange multiplier", xlabel="iteration")
        row[2].set(title="episodes repaired %", xlabel="iteration", ylim=(-2, 102))
        row[0].legend(fontsize="x-small", loc="lower right")
        row[1].legend(fontsize="x-small")
    return figure_


def kept_channels_figure(records: pd.DataFrame, palette: dict[str, Any]) -> Figure:
    """Fraction of channels each method keeps per channel group, mean over seeds (tick label: root module and
    group size), one panel per (experiment, target)."""
    panels = list(dict.fromkeys(zip(records["experiment"], records["target"], strict=True)))
    widest = max(records.groupby(["experiment", "target"])["group"].nunique())
    figure_ = Figure(figsize=(max(8.0, 0.45 * widest + 2), 5.2 * len(panels)), layout="constrained")
    axes = figure_.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (experiment, target) in zip(axes, panels, strict=True):
        panel = records[(records["experiment"] == experiment) & (records["target"] == target)]
        groups = list(dict.fromkeys(panel["group"]))
        sizes = panel.drop_duplicates("group").set_index("group")["size"]
        methods = list(dict.fromkeys(panel["method"]))
        for position, method in enumerate(methods):
            rows = panel[panel["method"] == method].groupby("group")[["kept_fraction"]].mean().loc[groups]
            ax.plot(range(len(groups)), rows["kept_fraction"], marker=MARKERS[position % len(MARKERS)],
                    color=palette[method], label=method, linewidth=1.2, markersize=6, alpha=0.9)
        ax.set_xticks(range(len(groups)), [f"{group} ({sizes[group]})" for group in groups], rotation=60,
                      ha="right", fontsize="small")
        ax.set(title=f"{experiment}, {target}", ylabel="channels kept (fraction of group)", ylim=(0, 1.05))
        ax.legend(fontsize="small", ncols=min(4, len(methods)), loc="lower left")
    return figure_


def method_palette(methods: pd.Series) -> dict[str, Any]:
    """One colour per method, in order of first appearance, shared by every figure."""
    names = list(dict.fromkeys(methods))
    return dict(zip(names, sns.color_palette("tab10", max(len(names), 1)), strict=False))


def _message_figure(message: str) -> Figure:
    figure_ = Figure(figsize=(7, 2))
    figure_.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return figure_


def _save_figure(figure_: Figure, path: str) -> None:
    buffer = io.BytesIO()
    figure_.savefig(buffer, format="png", dpi=120)
    atomic_write(path, lambda stream: stream.write(buffer.getvalue()))
