"""Shared pieces of the benchmarks: the machine description and an L1-uniform mask at a budget.

The mask builder is a stand-in for `graphprune.methods.heuristics` (not written yet); benchmarks only.
"""

from __future__ import annotations

import os
import platform

import torch
from torch import nn

from graphprune.cost import Budget, CostModel
from graphprune.pruning import ChannelGroups, Mask


def machine_summary() -> str:
    """CPU model, cores, torch threads and load: the figures below depend on all four."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads, load average {load}")


def root_filter_l1(module: nn.Module) -> torch.Tensor:
    """L1 norm of each output channel's weights of a group's root layer: [out_channels]."""
    weight = module.weight.detach()
    return weight.abs() if weight.dim() == 1 else weight.abs().flatten(1).sum(1)


def l1_uniform_mask(model: nn.Module, groups: ChannelGroups, cost: CostModel, budget: Budget) -> Mask:
    """The same keep fraction in every group, keeping the largest-L1 filters of each root layer; the
    fraction is the largest that meets `budget`, found by bisection on the analytic cost."""
    cost.check_feasible(budget)
    modules = dict(model.named_modules())
    ranked = [root_filter_l1(modules[g.root]).argsort(descending=True) for g in groups.groups]

    def counts_at(fraction: float) -> list[int]:
        return [max(low, min(size, round(fraction * size))) for low, size in zip(cost.min_counts, groups.sizes, strict=True)]

    feasible, infeasible = 0.0, 1.0
    if cost.meets(budget, counts_at(infeasible)):
        feasible = infeasible
    for _ in range(40):  # counts change in steps of 1/size, so 40 halvings settle far below any step
        middle = (feasible + infeasible) / 2
        if cost.meets(budget, counts_at(middle)):
            feasible = middle
        else:
            infeasible = middle
    counts = counts_at(feasible)
    return Mask(groups.sizes, tuple(tuple(sorted(order[:count].tolist())) for order, count in zip(ranked, counts, strict=True)))
