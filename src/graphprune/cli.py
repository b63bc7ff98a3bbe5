"""The `graphprune` command: a thin dispatcher over the subcommand modules in `graphprune.commands`.

User errors (GraphpruneError) print one line to stderr and exit with status 2; anything else is a bug and
keeps its stack trace. No logic lives here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
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
    "graphprune.commands.agent",
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


# Tianshou compiles its numba helpers (GAE, n-step returns, buffer indices) in every process that builds an
# agent: 6-12 s of every RL search job here, for loops over a few hundred transitions that plain Python runs in
# milliseconds, with the same results bit for bit (tests/test_cli.py). Only where the command starts the
# process: numba reads the setting when imported and again when it compiles, so switching it in a process that
# already uses numba would break its next compile; a NUMBA_DISABLE_JIT already set wins.
JIT_FREE_ENVIRONMENT = {"NUMBA_DISABLE_JIT": "1"}


def main(argv: list[str] | None = None) -> int:
    if "numba" not in sys.modules:
        for name, value in JIT_FREE_ENVIRONMENT.items():
            os.environ.setdefault(name, value)  # before anything imports numba (Tianshou, inside the commands)
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
