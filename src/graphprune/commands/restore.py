"""`graphprune restore`: make cached pipeline outputs from a DVC remote count as up to date for Snakemake.

Run in a fresh clone (repository root) instead of recomputing. This module parses the options and prints; the
work (`dvc pull`, `dvc status`, `snakemake --touch`) is `graphprune.restore`'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from graphprune.restore import restore


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "restore", help="fetch cached results with DVC and mark them up to date for Snakemake",
        description="Run from the repository root of a clone: dvc pull, dvc status, then "
                    "snakemake --touch --forceall --cores 1, after which `snakemake -n` has nothing to do.",
    )
    parser.add_argument("-r", "--remote", default=None,
                        help="DVC remote to pull from (default: the repository's default remote, "
                             "see `dvc remote list`)")
    parser.add_argument("--configfile", default=None,
                        help="config the cached results were made with, passed to Snakemake "
                             "(default: the Snakefile's config.yaml)")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    seconds = restore(Path.cwd(), remote=args.remote, configfile=args.configfile)
    print("restored cached results in {:.1f} s ({}); `snakemake -n` now has nothing to do".format(
        sum(seconds.values()), ", ".join(f"{step} {s:.1f} s" for step, s in seconds.items())))
    return 0
