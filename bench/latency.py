"""Measured latency of pruned vs unpruned networks at 50% FLOPs: how much of the FLOPs cut becomes speed-up.

CIFAR ResNet-56 (32x32) and torchvision ResNet-50 (224x224), L1-uniform masks at flops0.5, physically pruned,
CPU, batch 1 and 64; both networks timed interleaved in the same run (`measure_latency`).
Run: `.venv/bin/python bench/latency.py [--threads N]` (default: torch's thread count).
"""

from __future__ import annotations

import argparse

import torch
from common import l1_uniform_mask, machine_summary

from graphprune.models import ModelSpec, build_model
from graphprune.network.cost import CostModel, parse_target
from graphprune.network.latency import measure_latency
from graphprune.network.pruning import ChannelGroups, prune_model

# (spec, batch size, warmup runs, timed runs per network): batch 64 at 224 takes seconds per run on 2 cores.
CASES = [
    (ModelSpec("resnet56", input_size=32), 1, 5, 30),
    (ModelSpec("resnet56", input_size=32), 64, 2, 10),
    (ModelSpec("torchvision:resnet50", num_classes=1000, input_size=224), 1, 2, 8),
    (ModelSpec("torchvision:resnet50", num_classes=1000, input_size=224), 64, 1, 3),
]
TARGET = parse_target("flops0.5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch intra-op threads (on a shared machine 1 is steadier)")
    if (threads := parser.parse_args().threads) is not None:
        torch.set_num_threads(threads)
    print(f"machine: {machine_summary()}")
    print(f"budget {TARGET}, L1-uniform mask, CPU; latency = median of the timed runs, pruned / unpruned\n")
    header = ("model", "batch", "runs (warmup+timed)", "FLOPs ratio", "params ratio", "unpruned ms", "pruned ms",
              "latency ratio", "speed-up", "FLOPs speed-up", "FLOPs cut realised")
    rows = []
    pruned_by_name: dict[str, tuple] = {}
    for spec, batch, warmup, repeats in CASES:
        if spec.name not in pruned_by_name:
            torch.manual_seed(0)
            model = build_model(spec).eval()
            groups = ChannelGroups(model, spec.input_shape)
            cost = CostModel(model, groups)
            mask = l1_uniform_mask(model, groups, cost, TARGET)
            ratios = (cost.ratio("flops", mask.counts), cost.ratio("params", mask.counts))
            pruned_by_name[spec.name] = (model, prune_model(model, groups, mask), ratios)
        model, pruned, (flops_ratio, params_ratio) = pruned_by_name[spec.name]
        timing = measure_latency(pruned, model, spec.input_shape, batch_sizes=(batch,), warmup=warmup,
                                 repeats=repeats)[batch]
        latency_ratio = timing["ratio"]
        rows.append((
            spec.name, batch, f"{warmup}+{repeats}", f"{flops_ratio:.3f}", f"{params_ratio:.3f}",
            f"{timing['reference_s'] * 1e3:.1f}", f"{timing['model_s'] * 1e3:.1f}", f"{latency_ratio:.3f}",
            f"{1 / latency_ratio:.2f}x", f"{1 / flops_ratio:.2f}x",
            # Share of the FLOPs reduction that shows up as saved time: 100% when latency falls with FLOPs.
            f"{(1 - latency_ratio) / (1 - flops_ratio):.0%}",
        ))
        print(f"done: {spec.name} batch {batch}", flush=True)
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")


if __name__ == "__main__":
    main()
