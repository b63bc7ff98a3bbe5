"""Issue 11's bar from a pipeline run's searches: does the agent learn, and does it beat the controls?

Reads search/record.json (and, for the agent, search/iterations.csv) of every (experiment, method, target,
seed) in the config, runs nothing. Prints, per experiment and target:
- every method's search top-1 (best mask, before fine-tuning), mean ± std over seeds;
- for the agent and its variants, the learning measures (graphprune.stages.report.learning_measures): the final
  greedy policy's search top-1 and its gap to the best mask, the largest collapse of the sampled mean after
  the first quarter, the repaired share of the last quarter's episodes and the multiplier at the end;
- each agent row against each control (default: l1_ratio_search, amc): the mean difference, the larger of the
  two seed spreads, and Welch's t-test.

    .venv/bin/snakemake --cores all --configfile configs/agent-bar.yaml --replace-workflow-config --until search
    .venv/bin/python bench/agent_bar.py --config configs/agent-bar.yaml [--out bench/out/agent_bar.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from scipy.stats import ttest_ind

from graphprune.config import load_config
from graphprune.stages.report import each_run, learning_measures

CONTROLS = ("l1_ratio_search", "amc")
MEASURES = ("greedy", "greedy_gap", "collapse_drop", "repaired_last_quarter", "multiplier")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/agent-bar.yaml")
    parser.add_argument("--controls", nargs="+", default=list(CONTROLS))
    parser.add_argument("--out", default="bench/out/agent_bar.md")
    args = parser.parse_args()
    runs = collect(args.config)
    text = "\n".join(render(runs, args.controls))
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    runs.to_csv(Path(args.out).with_suffix(".csv"), index=False)


def collect(config_path: str) -> pd.DataFrame:
    """One row per finished search: its keys, search top-1, evaluations, seconds and, for agent searches,
    the learning measures. Searches not run yet are skipped (the table's n says how many ran)."""
    rows = []
    for name, paths, method, target, seed in each_run(load_config(config_path)):
        record_path = Path(paths.search_record(method, target, seed))
        if not record_path.is_file():
            continue
        record = json.loads(record_path.read_text())
        row = {"experiment": name, "method": method, "target": target, "seed": seed,
               "search_top1": record["search_top1"], "masks": record.get("masks_evaluated", 0),
               "seconds": record.get("search_seconds", float("nan"))}
        iterations = Path(paths.search_iterations(method, target, seed))
        if iterations.is_file() and "greedy_policy_search_top1" in record:
            row.update({k: v for k, v in learning_measures(pd.read_csv(iterations), record).items()
                        if k in MEASURES})
        rows.append(row)
    return pd.DataFrame(rows)


def render(runs: pd.DataFrame, controls: list[str]) -> list[str]:
    lines = []
    for (experiment, target), group in runs.groupby(["experiment", "target"], sort=False):
        lines += [f"## {experiment}, {target}", "",
                  "| method | n | search top-1 % | masks | s/search | greedy % | best - greedy pp | collapse pp | "
                  "repaired (last quarter) | multiplier |", "|---|---|---|---|---|---|---|---|---|---|"]
        for method, seeds in group.groupby("method", sort=False):
            cells = [method, str(len(seeds)), _mean_std(100 * seeds["search_top1"]), f"{seeds['masks'].mean():.0f}",
                     f"{seeds['seconds'].mean():.0f}"]
            if _is_agent(seeds):
                cells += [_mean_std(100 * seeds["greedy"]), _mean_std(100 * seeds["greedy_gap"]),
                          f"{100 * seeds['collapse_drop'].max():.1f} (max)",
                          f"{seeds['repaired_last_quarter'].mean():.2f}", f"{seeds['multiplier'].mean():.2f}"]
            else:
                cells += [""] * 5
            lines.append("| " + " | ".join(cells) + " |")
        lines += [""] + _comparisons(group, controls) + [""]
    return lines


def _comparisons(group: pd.DataFrame, controls: list[str]) -> list[str]:
    """Each agent method against each control: mean difference (pp), the larger seed spread, Welch's p."""
    lines = []
    agents = [method for method, seeds in group.groupby("method", sort=False) if _is_agent(seeds)]
    for agent in agents:
        a = 100 * group.loc[group["method"] == agent, "search_top1"]
        for control in controls:
            b = 100 * group.loc[group["method"] == control, "search_top1"]
            if len(a) < 2 or len(b) < 2:
                continue
            p = float(ttest_ind(a, b, equal_var=False).pvalue)
            spread = max(a.std(), b.std())
            verdict = "beats it by more than the spread" if a.mean() - b.mean() > spread else (
                "level or better" if a.mean() >= b.mean() else "behind")
            lines.append(f"- {agent} vs {control}: {a.mean() - b.mean():+.2f} pp (seed spread {spread:.2f} pp, "
                         f"Welch p = {p:.3f}): {verdict}")
    return lines


def _is_agent(seeds: pd.DataFrame) -> bool:
    """Rows of a method whose searches logged the agent's learning measures."""
    return "greedy" in seeds and seeds["greedy"].notna().all()


def _mean_std(values: pd.Series) -> str:
    return f"{values.mean():.2f} ± {values.std():.2f}" if len(values) > 1 else f"{values.mean():.2f}"


if __name__ == "__main__":
    main()
