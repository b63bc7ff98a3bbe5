"""Write docs/RESULTS.md from the report's own tables: nothing typed in.

Reads the summary.md that `graphprune report` rendered for each config (the default digits run of `make run`
and the Fashion-MNIST benchmark of `make bench`), and writes them under a header naming the commit, the
machine and the command that produced each table. Run it after both pipelines finished:

    make run && make bench && .venv/bin/python bench/results_doc.py
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from common import machine_summary

from graphprune.config import load_config
from graphprune.paths import summary_md

# (config file, the command that runs it)
SOURCES = (
    ("configs/fashion-resnet20.yaml", "make bench"),
    ("config.yaml", "make run"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/RESULTS.md")
    parser.add_argument("--configs", nargs="+", default=[path for path, _ in SOURCES],
                        help="which of the configs' tables to copy (default: all)")
    args = parser.parse_args()
    commands = dict(SOURCES)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, check=True).stdout.strip()
    parts = ["# Results", "",
             f"Rendered by `graphprune report` from commit `{commit}`{' (with uncommitted changes)' if dirty else ''}"
             f" on {machine_summary()}, and copied here by `bench/results_doc.py`. Each table's command is above it;"
             " accuracies in percent, mean ± std over the n seeds; bold: the best per target, * where its lead "
             "over the runner-up is larger than seed noise (Welch's t-test, p < 0.05).", ""]
    for config_path in args.configs:
        command = commands.get(config_path, f"snakemake --cores all --configfile {config_path} "
                                            "--replace-workflow-config")
        config = load_config(config_path)
        summary = Path(summary_md(config.results_dir))
        if not summary.is_file():
            raise SystemExit(f"{summary} is missing: run `{command}` first")
        body = summary.read_text().split("\n", 2)[2]  # drop the report's own '# Results' title
        parts += [f"## `{command}` ({config_path})", "", body.replace("\n## ", "\n### "), ""]
    Path(args.out).write_text("\n".join(parts))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
