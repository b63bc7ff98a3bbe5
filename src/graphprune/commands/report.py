"""`graphprune report`: the results table and figures of every experiment, method and target in a config.

Reads only result files (baseline and finetuned metrics.json, search/record.json, search/log.csv); writes
results/summary.csv, summary.md and figures/*.png (see `graphprune.stages.report`). Trains and evaluates
nothing.
"""

from __future__ import annotations

import argparse

from graphprune.commands.common import add_config_argument
from graphprune.config import load_config


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("report", help="tables and figures from the finished results of a config")
    add_config_argument(parser)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from graphprune.stages.report import write_report  # pandas and seaborn: only when reporting

    config = load_config(args.config)
    written = write_report(config)
    print(f"{len(written.summary)} rows -> {written.summary_csv}, {written.summary_md}; "
          f"figures -> {', '.join(written.figures)}")
    return 0
