"""Command-line options shared by the subcommands that work on one experiment of a config."""

from __future__ import annotations

import argparse
import os

from graphprune.config import CONFIG_FILE_VARIABLE, Config, Experiment, load_config


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get(CONFIG_FILE_VARIABLE, "config.yaml")
    parser.add_argument("--config", default=default,
                        help=f"config file (default: ${CONFIG_FILE_VARIABLE} if set, else config.yaml; now %(default)s)")


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--experiment", required=True, help="experiment name from the config")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default=None,
        help="where to run (default: the config's `device`)",
    )
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own choice; the pipeline passes its job's threads)")


def add_method_target_arguments(parser: argparse.ArgumentParser) -> None:
    """--method, --target and --seed: which (method, budget, seed) result of the experiment a command works on."""
    parser.add_argument("--method", required=True,
                        help="pruning method: a registry name (e.g. gat_ppo) or a variant of the experiment")
    parser.add_argument("--target", required=True, help="budget, e.g. flops0.5 or params0.3")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the search and fine-tuning (default: the experiment's first seed)")


def run_seed(args: argparse.Namespace, experiment: Experiment) -> int:
    """--seed, or the experiment's first seed; a seed outside the experiment's `seeds` is allowed (by hand)."""
    return experiment.seeds[0] if args.seed is None else args.seed


def apply_threads(args: argparse.Namespace) -> None:
    """Give torch the --threads the job was granted (parallel pipeline jobs must not oversubscribe the cores)."""
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))


def load_experiment(args: argparse.Namespace) -> tuple[Config, Experiment]:
    """The config and experiment the arguments name; applies --threads, as every such command computes."""
    apply_threads(args)
    config = load_config(args.config)
    return config, config.experiment(args.experiment)
