"""Shared pieces of the benchmarks: the machine description and an L1-uniform mask at a budget.

The mask is the `l1_uniform` heuristic's, through the common method interface.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
from torch import nn

from graphprune.methods.base import MethodContext, get_method
from graphprune.network.cost import Budget, CostModel
from graphprune.network.pruning import ChannelGroups, Mask


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


def l1_uniform_mask(model: nn.Module, groups: ChannelGroups, cost: CostModel, budget: Budget) -> Mask:
    """The `l1_uniform` heuristic's mask: the same keep fraction in every group, largest-L1 filters kept."""
    return get_method("l1_uniform").search(MethodContext(model, groups, cost), budget).mask


def trained_setup(config_path: str, experiment_name: str):
    """(experiment, PruningSetup, test scorer) of a config's experiment, pretraining its baseline and building
    its graph if absent (as the pipeline's `pretrain` and `graph` stages would).

    The test scorer is a SearchEvaluator on the test split with the search's BN recalibration: benchmarks
    report test accuracy of masks before fine-tuning with it (searches never see it)."""
    from graphprune.config import load_config
    from graphprune.data.splits import load_splits
    from graphprune.network.search_eval import build_search_evaluator
    from graphprune.stages.graph import extract_graph
    from graphprune.stages.pretrain import pretrain
    from graphprune.stages.search import load_setup

    config = load_config(config_path)
    experiment = config.experiment(experiment_name)
    if not Path(config.paths(experiment.name).baseline_model()).exists():
        pretrain(config, experiment)
    if not Path(config.paths(experiment.name).graph()).exists():
        extract_graph(config, experiment)
    setup = load_setup(config, experiment)
    splits = load_splits(experiment.dataset)
    s = experiment.search
    test_scorer = build_search_evaluator(
        setup.model, setup.groups, splits.test, splits.train, search_images=None,
        calibration_batches=s.calibration_batches, calibration_batch_size=s.calibration_batch_size,
        recalibrate_bn=s.recalibrate_bn, seed=experiment.seed, device="cpu",
    )
    return experiment, setup, test_scorer
