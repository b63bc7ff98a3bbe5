"""Job: check what a finished run of the pipeline left in its working folder (the cluster test's verdict).

    python tests/cluster/check_outputs.py WORKDIR [--slurm SNAKEMAKE_OUTPUT]

WORKDIR holds the run's config.yaml, results/ and logs/. Checked: every output the rules promise for every
experiment x method x target exists and is not empty; JSON files parse; each search met its budget; and,
when the workflow has a report rule (results/summary.csv is then expected), the summary table has exactly one
row per experiment x method x target with finite values in range. With --slurm (the run's captured Snakemake
output), additionally every job of the run went through sbatch: one "submitted with SLURM jobid" line per job
Snakemake ran (the local target rule `all` aside), and the SLURM log file each of them names exists. Prints what it checked; exits 1 with every problem listed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path

from graphprune.config import load_config
from graphprune.paths import REPORT_FIGURES, figure, summary_csv, summary_md

SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.")
# Jobs that run on the submitting host (no shell): not sent to SLURM.
LOCAL_RULES = {"all"}
SUMMARY_RANGES = {  # column -> (low, high), inclusive
    "flops_ratio": (0.0, 1.0), "params_ratio": (0.0, 1.0), "search_top1": (0.0, 1.0),
    "test_top1_pruned": (0.0, 1.0), "test_top1_finetuned": (0.0, 1.0), "delta_top1": (-1.0, 1.0),
    "masks_evaluated": (0.0, math.inf), "search_seconds": (0.0, math.inf),
}


def budget(target: str) -> tuple[str, float]:
    """'flops0.5' -> ('flops', 0.5)."""
    match = re.fullmatch(r"(flops|params)([0-9.]+)", target)
    if match is None:
        raise ValueError(f"not a budget: {target}")
    return match.group(1), float(match.group(2))


def expected_files(workdir: Path, has_finetune: bool, has_report: bool) -> list[Path]:
    config = load_config(workdir / "config.yaml")
    files = []
    for name, experiment in config.experiments.items():
        paths = config.paths(name)
        files += [paths.baseline_model(), paths.baseline_metrics(), paths.baseline_history(),
                  paths.graph(), paths.graph_summary(), paths.log("pretrain"), paths.log("graph")]
        for method, target, seed in experiment.runs():
            files += [paths.mask(method, target, seed), paths.search_record(method, target, seed),
                      paths.log("search", method, target, seed)]
            if has_finetune:
                files += [paths.finetuned_model(method, target, seed), paths.finetuned_metrics(method, target, seed),
                          paths.finetuned_history(method, target, seed), paths.log("finetune", method, target, seed)]
    if has_report:
        root = config.results_dir
        files += [summary_csv(root), summary_md(root)] + [figure(root, name) for name in REPORT_FIGURES]
    return [workdir / f for f in files]


def check_files(workdir: Path, problems: list[str]) -> None:
    rules = {path.stem for path in (Path(__file__).resolve().parents[2] / "workflow" / "rules").glob("*.smk")}
    files = expected_files(workdir, "finetune" in rules, "report" in rules)
    for path in files:
        if not path.is_file() or path.stat().st_size == 0:
            problems.append(f"missing or empty: {path.relative_to(workdir)}")
        elif path.suffix == ".json":
            try:
                json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                problems.append(f"not valid JSON: {path.relative_to(workdir)}: {exc}")
    print(f"outputs: {len(files)} expected files checked (rules: {', '.join(sorted(rules))})")


def check_budgets(workdir: Path, problems: list[str]) -> None:
    config = load_config(workdir / "config.yaml")
    checked = 0
    for name, experiment in config.experiments.items():
        paths = config.paths(name)
        for method, target, seed in experiment.runs():
            path = workdir / paths.search_record(method, target, seed)
            if not path.is_file():
                continue
            record = json.loads(path.read_text())
            kind, limit = budget(target)
            ratio = record.get(f"{kind}_ratio")
            if not isinstance(ratio, int | float) or not 0 < ratio <= limit + 1e-9:
                problems.append(f"{name} {method} {target} seed {seed}: {kind}_ratio {ratio!r} breaks the budget {limit}")
            checked += 1
    print(f"budgets: {checked} search records within their budget" if checked else "budgets: no record found")


def check_summary(workdir: Path, problems: list[str]) -> None:
    config = load_config(workdir / "config.yaml")
    path = workdir / summary_csv(config.results_dir)
    if not path.is_file():
        return  # reported by check_files when a report rule exists
    with path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    expected = {(name, method, target) for name, experiment in config.experiments.items()
                for method in experiment.methods for target in experiment.targets}
    keys = [(row.get("experiment"), row.get("method"), row.get("target")) for row in rows]
    if sorted(keys) != sorted(expected):
        problems.append(f"summary.csv rows {sorted(keys)} != expected {sorted(expected)}")
    missing = [column for column in SUMMARY_RANGES if rows and column not in rows[0]]
    if missing:
        problems.append(f"summary.csv lacks columns {missing}")
    for row in rows:
        for column, (low, high) in SUMMARY_RANGES.items():
            if column not in row:
                continue
            try:
                value = float(row[column])
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and low <= value <= high):
                problems.append(f"summary.csv {row['method']} {row['target']}: {column}={row[column]!r} "
                                f"not in [{low}, {high}]")
    if not (workdir / summary_md(config.results_dir)).read_text().startswith("# "):
        problems.append("summary.md has no title")
    print(f"summary: {len(rows)} rows, {len(expected)} expected, {len(SUMMARY_RANGES)} columns range-checked")


def check_slurm(output: Path, problems: list[str]) -> None:
    """Every job Snakemake ran, except the local `all`, was submitted with sbatch and has its SLURM log."""
    text = output.read_text()
    submitted = SUBMITTED.findall(text)
    ran = re.findall(r"^(local)?rule (\w+):$", text, flags=re.MULTILINE)
    local = [rule for is_local, rule in ran if is_local and rule not in LOCAL_RULES]
    remote = [rule for is_local, rule in ran if not is_local]
    if local:
        problems.append(f"rules ran on the submitting host, not through SLURM: {', '.join(local)}")
    if not remote:
        problems.append(f"{output}: no job ran (was everything up to date?)")
    if len(submitted) != len(remote):
        problems.append(f"{len(remote)} jobs ran ({', '.join(remote)}) but {len(submitted)} were submitted to SLURM")
    for _, jobid, log in submitted:
        if not Path(log).is_file():
            problems.append(f"SLURM job {jobid}: its log {log} does not exist")
    slurm_ids = sorted({int(jobid) for _, jobid, _ in submitted})
    print(f"slurm: {len(submitted)} sbatch submissions for {len(remote)} jobs ({', '.join(sorted(set(remote)))}), "
          f"SLURM job ids {slurm_ids}, each with its SLURM log")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path, help="the run's working folder (its config.yaml, results/, logs/)")
    parser.add_argument("--slurm", type=Path, metavar="SNAKEMAKE_OUTPUT",
                        help="the run's captured Snakemake output: check every job went through SLURM")
    args = parser.parse_args(argv)
    problems: list[str] = []
    check_files(args.workdir, problems)
    check_budgets(args.workdir, problems)
    check_summary(args.workdir, problems)
    if args.slurm:
        check_slurm(args.slurm, problems)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    print(f"check_outputs: {'FAILED, ' + str(len(problems)) + ' problem(s)' if problems else 'all checks passed'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
