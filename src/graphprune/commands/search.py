"""`graphprune search`: choose a mask for one experiment, method and budget.

Writes results/<exp>/<method>/<target>/mask.pt and search/ (record.json; the RL methods also write their
search log and agent checkpoint there, from which an interrupted search resumes).
"""

from __future__ import annotations

import argparse

from graphprune.commands.common import (
    add_experiment_arguments,
    add_method_target_arguments,
    load_experiment,
    run_seed,
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("search", help="choose a pruning mask with one method under one budget")
    add_experiment_arguments(parser)
    add_method_target_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from graphprune.stages.search import load_setup, run_search  # heavy (Tianshou, PyG): only when searching

    config, experiment = load_experiment(args)
    seed = run_seed(args, experiment)
    setup = load_setup(config, experiment, args.device, seed)
    record = run_search(config, setup, args.method, args.target, seed)
    print(f"{experiment.name} {args.method} {args.target} seed {seed}: search top-1 {record['search_top1']:.4f}, "
          f"flops ratio {record['flops_ratio']:.3f}, params ratio {record['params_ratio']:.3f}, "
          f"{record['masks_evaluated']} masks evaluated in {record['search_seconds']:.1f} s "
          f"-> {config.paths(experiment.name).mask(args.method, args.target, seed)}")
    return 0
