"""The `graphprune` command: a thin dispatcher over the subcommand modules in `graphprune.commands`.

User errors (GraphpruneError) print one line to stderr and exit with status 2; anything else is a bug and
keeps its stack trace. No logic lives here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from graphprune import __version__
from graphprune.errors import GraphpruneError

# Pipeline order; each module's add_parser(subparsers) registers its subcommand (see graphprune.commands).
COMMANDS = (
    "graphprune.commands.pretrain",
    "graphprune.commands.graph",
    "graphprune.commands.prune",
    "graphprune.commands.restore",
    "graphprune.commands.search",
    "graphprune.commands.finetune",
    "graphprune.commands.report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphprune", description="Resource-aware channel pruning of CNNs with graph-based RL."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
    )
    try:
        return args.run(args)
    except GraphpruneError as exc:
        print(f"graphprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("graphprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
