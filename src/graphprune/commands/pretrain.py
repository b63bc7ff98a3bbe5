"""`graphprune pretrain`: train an experiment's baseline (the stage is `graphprune.stages.pretrain`)."""

from __future__ import annotations

import argparse

from graphprune.commands.common import add_experiment_arguments, load_experiment


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("pretrain", help="train the baseline network of an experiment")
    add_experiment_arguments(parser)
    parser.add_argument("--force", action="store_true", help="retrain even if an up-to-date baseline exists")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from graphprune.stages.pretrain import pretrain  # torch: only when the command runs

    config, experiment = load_experiment(args)
    metrics = pretrain(config, experiment, device=args.device, force=args.force)
    print(f"{experiment.name}: test top-1 {metrics.test_top1:.4f}, {metrics.flops / 1e6:.2f} M MACs, "
          f"{metrics.params / 1e3:.1f} k params -> {config.paths(experiment.name).baseline_dir()}")
    return 0
