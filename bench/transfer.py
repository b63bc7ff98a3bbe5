"""Issue 14's experiment: a shared agent on networks it never saw, against the controls at the same K and
against gat_ppo trained from scratch on each network with its full budget.

Reads the search records (and the scratch searches' log.csv) of configs/transfer.yaml and the agent's
agent.json, runs nothing. Prints per (network, target): search top-1 (best mask, before fine-tuning; mean ± std
over seeds) of the transfer agent at K = 1, 16, 64, of l1_ratio_search and amc at K = 16, 64, and of the
scratch agent after its first K episodes (its log.csv; an episode scores at most one new mask) and at the end; then the bar (transfer at K = 16 vs the
controls at 16, Welch's t-test, and its gap to scratch with the full budget) and the cost (the scratch
agent's evaluations and seconds to reach transfer-K16's accuracy). Draws accuracy against evaluations.

    .venv/bin/snakemake --cores all --configfile configs/transfer.yaml --replace-workflow-config --until search
    .venv/bin/python bench/transfer.py --config configs/transfer.yaml [--out bench/out/transfer.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from agent_bar import collect  # noqa: E402
from scipy.stats import ttest_ind  # noqa: E402

from graphprune.config import load_config  # noqa: E402
from graphprune.paths import agent_dir  # noqa: E402

SCRATCH = "gat_ppo_scratch"
TRANSFER = "gat_ppo_transfer_k{}"
CONTROLS = ("l1_ratio_search_k{}", "amc_k{}")
KS = (1, 16, 64)
BAR_K = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/transfer.yaml")
    parser.add_argument("--out", default="bench/out/transfer.md")
    parser.add_argument("--figure", default=None, help="default: <results_dir>/figures/transfer.png")
    args = parser.parse_args()
    config = load_config(args.config)
    runs = collect(args.config)
    runs = runs[runs["experiment"].isin(_unseen(config))]
    curves = scratch_curves(config, runs)
    lines = agent_lines(config) + render(runs, curves)
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    figure = Path(args.figure or Path(config.results_dir) / "figures" / "transfer.png")
    draw(runs, curves, figure)
    print(f"\nfigure: {figure}")


def _unseen(config) -> list[str]:
    """Experiments that run the transfer method (the networks the agents did not train on)."""
    return [name for name, e in config.experiments.items() if TRANSFER.format(BAR_K) in e.methods]


def agent_lines(config) -> list[str]:
    lines = []
    for name in config.agents:
        path = Path(agent_dir(config.results_dir, name)) / "agent.json"
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        networks = sorted({n["model"] for n in record["networks"]})
        lines += [f"Agent {name}: trained on {', '.join(networks)} at {', '.join(record['budgets'])}: "
                  f"{record['episodes']} episodes in {record['seconds'] / 60:.1f} min ({record['threads']} torch "
                  "thread(s), beside other jobs on this machine).", ""]
    return lines


def scratch_curves(config, runs: pd.DataFrame) -> pd.DataFrame:
    """The scratch agent's best search top-1 after each episode (its log), with the seconds spent so far
    (the search's wall time spread evenly over its episodes): one row per (experiment, target, seed, episode)."""
    rows = []
    for (experiment, target, seed), _ in runs[runs["method"] == SCRATCH].groupby(["experiment", "target", "seed"]):
        paths = config.paths(experiment)
        log = pd.read_csv(paths.search_log(SCRATCH, target, seed))
        record = json.loads(Path(paths.search_record(SCRATCH, target, seed)).read_text())
        per_episode = record["search_seconds"] / len(log)
        rows.append(pd.DataFrame({"experiment": experiment, "target": target, "seed": seed,
                                  "evaluations": np.arange(1, len(log) + 1), "best": log["best_search_top1"],
                                  "seconds": per_episode * np.arange(1, len(log) + 1)}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def render(runs: pd.DataFrame, curves: pd.DataFrame) -> list[str]:
    lines = []
    for (experiment, target), group in runs.groupby(["experiment", "target"], sort=False):
        top1 = {m: 100 * s.set_index("seed")["search_top1"] for m, s in group.groupby("method")}
        curve = curves[(curves["experiment"] == experiment) & (curves["target"] == target)]
        lines += [f"## {experiment}, {target}", "", "| K | transfer | l1_ratio_search | amc | scratch, best of its first K episodes |",
                  "|---|---|---|---|---|"]
        for k in KS:
            scratch_k = 100 * curve[curve["evaluations"] == k].set_index("seed")["best"]
            cells = [str(k), _mean_std(top1.get(TRANSFER.format(k)))] + [
                _mean_std(top1.get(c.format(k))) for c in CONTROLS] + [_mean_std(scratch_k)]
            lines.append("| " + " | ".join(cells) + " |")
        scratch = top1.get(SCRATCH)
        lines.append(f"| 512 (scratch, full budget) | | | | {_mean_std(scratch)} |")
        transfer = top1.get(TRANSFER.format(BAR_K))
        lines.append("")
        if transfer is None:
            continue
        for control in CONTROLS:
            other = top1.get(control.format(BAR_K))
            if other is None or len(other) < 2 or len(transfer) < 2:
                continue
            spread = max(transfer.std(), other.std())
            p = float(ttest_ind(transfer, other, equal_var=False).pvalue)
            verdict = "beats it by more than the spread" if transfer.mean() - other.mean() > spread else (
                "level or better" if transfer.mean() >= other.mean() else "behind")
            lines.append(f"- transfer K={BAR_K} vs {control.format(BAR_K)}: {transfer.mean() - other.mean():+.2f} pp "
                         f"(seed spread {spread:.2f} pp, Welch p = {p:.3f}): {verdict}")
        if scratch is not None:
            gap = scratch.mean() - transfer.mean()
            verdict = "transfer ahead" if gap < 0 else ("within 2 points" if gap <= 2 else "not within 2 points")
            lines.append(f"- scratch (512) - transfer K={BAR_K}: {gap:+.2f} pp ({verdict})")
            reach = [_to_reach(curve[curve["seed"] == seed], value / 100) for seed, value in transfer.items()]
            evaluations = [r[0] for r in reach if r is not None]
            if evaluations:
                seconds = [r[1] for r in reach if r is not None]
                lines.append(f"- scratch reaches transfer K={BAR_K}'s accuracy after {_spread(evaluations, '.0f')} "
                             f"episodes, {_spread(seconds, '.0f')} s ({len(evaluations)} of {len(reach)} seeds)")
            else:
                lines.append(f"- scratch does not reach transfer K={BAR_K}'s accuracy in any seed")
        lines.append("")
    return lines


def _to_reach(curve: pd.DataFrame, accuracy: float) -> tuple[int, float] | None:
    reached = curve[curve["best"] >= accuracy - 1e-9]
    return None if reached.empty else (int(reached["evaluations"].iloc[0]), float(reached["seconds"].iloc[0]))


def draw(runs: pd.DataFrame, curves: pd.DataFrame, path: Path) -> None:
    """Search top-1 against evaluations per (network, target): scratch curve (mean ± band over seeds) and the
    points of the transfer agent and the controls (mean, error bar = std)."""
    experiments, targets = list(dict.fromkeys(runs["experiment"])), list(dict.fromkeys(runs["target"]))
    fig, axes = plt.subplots(len(targets), len(experiments), figsize=(4 * len(experiments), 3.2 * len(targets)),
                             squeeze=False)
    for (experiment, target), group in runs.groupby(["experiment", "target"], sort=False):
        ax = axes[targets.index(target)][experiments.index(experiment)]
        curve = curves[(curves["experiment"] == experiment) & (curves["target"] == target)]
        if not curve.empty:
            stats = curve.groupby("evaluations")["best"].agg(["mean", "std"]).fillna(0.0)
            ax.plot(stats.index, 100 * stats["mean"], color="grey", label="gat_ppo from scratch")
            ax.fill_between(stats.index, 100 * (stats["mean"] - stats["std"]), 100 * (stats["mean"] + stats["std"]),
                            color="grey", alpha=0.2)
        for pattern, color, label in ((TRANSFER, "C3", "transfer"), (CONTROLS[0], "C0", "l1_ratio_search"),
                                      (CONTROLS[1], "C2", "amc")):
            points = [(k, 100 * group.loc[group["method"] == pattern.format(k), "search_top1"]) for k in KS]
            points = [(k, v) for k, v in points if len(v)]
            if points:
                ax.errorbar([k for k, _ in points], [v.mean() for _, v in points],
                            yerr=[v.std() if len(v) > 1 else 0 for _, v in points], marker="o", capsize=3,
                            color=color, label=label)
        ax.set_xscale("log")
        ax.set_xticks([1, 16, 64, 512], ["1", "16", "64", "512"])
        ax.set_title(f"{experiment.removeprefix('digits-')}, {target}", fontsize=9)
        ax.set_xlabel("evaluations (distinct masks scored)")
        ax.set_ylabel("search top-1 %")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def _mean_std(values) -> str:
    if values is None or len(values) == 0:
        return "-"
    return f"{values.mean():.2f} ± {values.std():.2f}" if len(values) > 1 else f"{values.mean():.2f}"


def _spread(values: list[float], spec: str) -> str:
    return f"{np.mean(values):{spec}} ({min(values):{spec}}-{max(values):{spec}})"


if __name__ == "__main__":
    main()
