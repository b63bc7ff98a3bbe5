"""Spread over seeds of the searching methods: search and test accuracy (before fine-tuning) per seed.

On the default experiment (digits, ResNet-20, trained by the pipeline's pretrain step if absent), for each
method, target and seed: the chosen mask's search accuracy and test accuracy (BN-recalibrated masked
forward, the test split scored only here), FLOPs ratio, masks evaluated and search seconds; then mean and
standard deviation per method and target. Methods (registry or variant names) use the experiment's settings
and every one scores the same number of distinct masks (the experiment's search.evaluations, or --evaluations).
The pipeline's `seeds` do the same with fine-tuning (make bench); this is the quick look without it.

    python bench/method_seeds.py [--methods amc gnnrl l1_ratio_search] [--seeds 0 1 2] [--evaluations 512]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import torch
from common import machine_summary, trained_setup

from graphprune.methods.base import MethodContext, get_method
from graphprune.network.cost import parse_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--experiment", default="digits-resnet20")
    parser.add_argument("--methods", nargs="+", default=["amc", "gnnrl", "random_search", "l1_ratio_search"])
    parser.add_argument("--targets", nargs="+", default=["flops0.5", "flops0.3"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--evaluations", type=int, default=None, help="search budget (default: the experiment's)")
    args = parser.parse_args()

    experiment, setup, test_scorer = trained_setup(args.config, args.experiment)
    print(f"machine: {machine_summary()}\n")
    rows = []
    evaluations = args.evaluations or experiment.search.evaluations
    for method in args.methods:
        settings = experiment.method_settings(method)
        for target in args.targets:
            for seed in args.seeds:
                out_dir = Path(tempfile.mkdtemp(prefix="method_seeds_"))
                try:
                    context = MethodContext(setup.model, setup.groups, setup.cost, setup.graph, setup.evaluator,
                                            seed, out_dir, evaluations)
                    result = get_method(experiment.base_method(method)).search(context, parse_target(target),
                                                                               settings)
                finally:
                    shutil.rmtree(out_dir, ignore_errors=True)
                rows.append({"method": method, "target": target, "seed": seed,
                             "search_top1": setup.evaluator(result.mask), "test_top1": test_scorer(result.mask),
                             "flops_ratio": result.record["flops_ratio"],
                             "masks_evaluated": result.record["masks_evaluated"],
                             "search_seconds": result.record["search_seconds"]})
                print(pd.DataFrame(rows[-1:]).round(4).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows).drop(columns="seed").groupby(["method", "target"])
    print("\nmean (std) over seeds:")
    print((table.mean().round(4).astype(str) + " (" + table.std().round(4).astype(str) + ")").to_string())


if __name__ == "__main__":
    torch.set_num_threads(1)  # reproducible timings on a shared 2-core machine
    main()
