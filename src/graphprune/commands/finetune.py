"""`graphprune finetune`: fine-tune the network one method pruned for one budget, and measure it on the test split.

Reads results/<exp>/baseline/model.pt, <method>/<target>/mask.pt and search/record.json; writes
<method>/<target>/finetuned/{model.pt, history.csv, metrics.json} (see `graphprune.stages.finetune`). An
interrupted run resumes from finetuned/last.pt.
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
    parser = subparsers.add_parser("finetune", help="fine-tune a pruned network and measure it on the test split")
    add_experiment_arguments(parser)
    add_method_target_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from graphprune.stages.finetune import finetune  # torch and Torch-Pruning: only when fine-tuning

    config, experiment = load_experiment(args)
    seed = run_seed(args, experiment)
    metrics = finetune(config, experiment, args.method, args.target, seed, device=args.device)
    print(f"{experiment.name} {args.method} {args.target} seed {seed}: test top-1 {metrics.test_top1_pruned:.4f} pruned, "
          f"{metrics.test_top1_finetuned:.4f} fine-tuned; flops ratio {metrics.flops_ratio:.3f}, latency ratio "
          f"{metrics.latency_ratio_b1:.2f} (batch 1), {metrics.latency_ratio_b64:.2f} (batch 64) "
          f"-> {config.paths(experiment.name).finetuned_dir(args.method, args.target, seed)}")
    return 0
