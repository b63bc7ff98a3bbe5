"""Analytic cost of a mask vs counting it on the physically pruned network, side by side in one run.

For CIFAR ResNet-56 (32x32) and torchvision ResNet-50 (224x224), an L1-uniform mask at 50% FLOPs: the
analytic FLOPs/params (`CostModel`), the counter's (`count_ops_and_params` on `prune_model(...)` output), and
the time per call of each. Run: `.venv/bin/python bench/cost_model.py`.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch_pruning as tp
from common import l1_uniform_mask, machine_summary

from graphprune.models import ModelSpec, build_model
from graphprune.network.cost import CostModel, parse_target
from graphprune.network.pruning import ChannelGroups, prune_model

CASES = [ModelSpec("resnet56", input_size=32), ModelSpec("torchvision:resnet50", num_classes=1000, input_size=224)]
ANALYTIC_CALLS = 1000
COUNTER_CALLS = 5


def timed(function, calls: int) -> tuple[object, float]:
    """(last result, median seconds per call)."""
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return result, statistics.median(seconds)


def main() -> None:
    print(f"machine: {machine_summary()}")
    print(f"analytic: mean of {ANALYTIC_CALLS} calls of flops()+params(); counter: median of {COUNTER_CALLS} calls\n")
    header = ("model", "groups", "trace s", "analytic FLOPs", "counter FLOPs", "analytic params", "counter params",
              "analytic us", "prune+count ms", "count ms", "speed-up")
    rows = []
    for spec in CASES:
        torch.manual_seed(0)
        model = build_model(spec).eval()
        groups = ChannelGroups(model, spec.input_shape)
        (cost, trace_s) = timed(lambda: CostModel(model, groups), 1)  # noqa: B023 (called at once)
        mask = l1_uniform_mask(model, groups, cost, parse_target("flops0.5"))
        counts = mask.counts
        start = time.perf_counter()
        for _ in range(ANALYTIC_CALLS):
            flops, params = cost.flops(counts), cost.params(counts)
        analytic_s = (time.perf_counter() - start) / ANALYTIC_CALLS
        example = torch.zeros(1, *spec.input_shape)
        (_, prune_count_s) = timed(
            lambda: tp.utils.count_ops_and_params(prune_model(model, groups, mask), example), COUNTER_CALLS  # noqa: B023
        )
        pruned = prune_model(model, groups, mask)
        ((counter_flops, counter_params), count_s) = timed(
            lambda: tp.utils.count_ops_and_params(pruned, example), COUNTER_CALLS  # noqa: B023
        )
        rows.append((spec.name, len(groups), f"{trace_s:.2f}", f"{flops:,}", f"{int(counter_flops):,}", f"{params:,}",
                     f"{counter_params:,}", f"{analytic_s * 1e6:.1f}", f"{prune_count_s * 1e3:.0f}",
                     f"{count_s * 1e3:.0f}", f"{prune_count_s / analytic_s:,.0f}x"))
        assert (flops, params) == (int(counter_flops), counter_params), "analytic cost disagrees with the counter"
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")
    print("\nspeed-up: prune+count time / analytic time. 'trace s': one-off CostModel construction.")


if __name__ == "__main__":
    main()
