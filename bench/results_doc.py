"""Write docs/RESULTS.md from the report's own tables: nothing typed in.

Reads the summary.md that `graphprune report` rendered for each config (the default digits run of `make run`
and the Fashion-MNIST benchmark of `make bench`), each in a section naming the command, the commit and the
machine that produced it. Run it after both pipelines finished, or refresh one section and keep the other:

    make run && make bench && .venv/bin/python bench/results_doc.py
    make bench && .venv/bin/python bench/results_doc.py --configs configs/fashion-resnet20.yaml
"""

from __future__ import annotations

import argparse
import re
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
                        help="which of the configs' tables to copy (default: all); the others' sections stay as "
                             "they are in --out, each with its own commit and machine")
    args = parser.parse_args()
    commands = dict(SOURCES)
    out = Path(args.out)
    kept = _sections(out.read_text()) if out.is_file() else {}
    provenance = _provenance()
    sections = {}
    for config_path in dict.fromkeys([path for path, _ in SOURCES] + args.configs):
        if config_path not in args.configs:
            if config_path in kept:
                sections[config_path] = kept[config_path]
            continue
        command = commands.get(config_path, f"snakemake --cores all --configfile {config_path} "
                                            "--replace-workflow-config")
        config = load_config(config_path)
        summary = Path(summary_md(config.results_dir))
        if not summary.is_file():
            raise SystemExit(f"{summary} is missing: run `{command}` first")
        body = summary.read_text().split("\n", 2)[2]  # drop the report's own '# Results' title
        sections[config_path] = "\n".join([f"## `{command}` ({config_path})", "", provenance, "",
                                           body.replace("\n## ", "\n### ").strip(), ""])
    parts = ["# Results", "",
             "The tables `graphprune report` rendered for each config, copied here by `bench/results_doc.py`; each "
             "section names its command, commit and machine. Accuracies in percent, mean ± std over the n seeds; "
             "bold: the best per target, * where its lead over the runner-up is larger than seed noise (Welch's "
             "t-test, p < 0.05).", "", *sections.values()]
    out.write_text("\n".join(parts))
    print(f"wrote {out}")


def _provenance() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, check=True).stdout.strip()
    return (f"Copied at commit `{commit}`{' (with uncommitted changes)' if dirty else ''} on "
            f"{machine_summary()}; the run's own date, tree and wall time are in docs/BENCHMARKS.md.")


def _sections(text: str) -> dict[str, str]:
    """config path -> its whole section ('## `command` (config path)' to the next such heading) of a RESULTS.md."""
    sections, current = {}, None
    for line in text.splitlines():
        heading = re.fullmatch(r"## `[^`]+` \((.+)\)", line)
        if heading:
            current = heading.group(1)
            sections[current] = []
        if current is not None:
            sections[current].append(line)
    return {path: "\n".join(lines).strip() + "\n" for path, lines in sections.items()}


if __name__ == "__main__":
    main()
