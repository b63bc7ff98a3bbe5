"""`graphprune train-agent`: train a shared pruning agent of the config (the stage is
`graphprune.stages.agent`)."""

from __future__ import annotations

import argparse

from graphprune.commands.common import add_config_argument, apply_threads
from graphprune.config import load_config


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-agent", help="train one agent on several networks and budgets (method gat_ppo_transfer uses it)")
    add_config_argument(parser)
    parser.add_argument("--agent", required=True, help="agent name from the config's agents section")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="where to run (default: the config's `device`)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from graphprune.stages.agent import train_agent  # Tianshou, torch-geometric: only when training

    apply_threads(args)
    config = load_config(args.config)
    record = train_agent(config, args.agent, args.device)
    finals = ", ".join(f"{task} {value:.3f}" for task, value in record["final_sampled_mean"].items())
    print(f"agent {args.agent}: {record['episodes']} episodes on {len(record['tasks'])} tasks in "
          f"{record['seconds']:.0f} s; last sampled mean per task: {finals}")
    return 0
