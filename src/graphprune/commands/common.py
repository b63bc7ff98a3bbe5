"""Command-line options shared by the subcommands that work on one experiment of a config."""

from __future__ import annotations

import argparse

from graphprune.config import Config, Experiment, load_config


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config.yaml", help="config file (default: %(default)s)")
    parser.add_argument("--experiment", required=True, help="experiment name from the config")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default=None,
        help="where to run (default: the config's `device`)",
    )


def add_method_target_arguments(parser: argparse.ArgumentParser) -> None:
    """--method and --target: which (method, budget) result of the experiment a command works on."""
    parser.add_argument("--method", required=True, help="pruning method (registry name, e.g. gat_ppo)")
    parser.add_argument("--target", required=True, help="budget, e.g. flops0.5 or params0.3")


def load_experiment(args: argparse.Namespace) -> tuple[Config, Experiment]:
    config = load_config(args.config)
    return config, config.experiment(args.experiment)
