"""Shared fixtures: tiny experiments on fake data, so pipeline-shaped tests run in seconds."""

import copy
import functools
import os
from pathlib import Path

import pytest
import yaml

from graphprune.config import Experiment, config_from_dict

REPO_ROOT = Path(__file__).resolve().parents[1]

# 1x8x8 fake images, 4 classes: the same shapes as digits at a fraction of the cost.
TINY_EXPERIMENT = {
    "seed": 3,
    "dataset": {"name": "fake", "num_samples": 48, "search_size": 16, "in_channels": 1, "input_size": 8,
                "num_classes": 4},
    "model": {"name": "resnet20"},
    "pretrain": {"epochs": 2, "batch_size": 16, "lr": 0.05},
}


def write_config(directory: Path, experiments: dict) -> Path:
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump({"results_dir": str(directory / "results"), "device": "cpu",
                                    "experiments": experiments}))
    return path


@functools.cache
def traced_model(spec):
    """(model, channel groups, cost model) of a seeded `spec` model in eval mode, built once per test session
    and shared by the test files: tests must leave them as they found them."""
    import torch

    from graphprune.models import build_model
    from graphprune.network.cost import CostModel
    from graphprune.network.pruning import ChannelGroups

    torch.manual_seed(0)
    model = build_model(spec).eval()
    groups = ChannelGroups(model, spec.input_shape)
    return model, groups, CostModel(model, groups)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def tiny_section() -> dict:
    """A fresh copy of the tiny experiment's config section, free to modify."""
    return copy.deepcopy(TINY_EXPERIMENT)


@pytest.fixture
def tiny_experiment() -> Experiment:
    """The typed `tiny` experiment (fake 1x8x8 data, 4 classes, ResNet-20, 2 epochs)."""
    return config_from_dict({"experiments": {"tiny": TINY_EXPERIMENT}}).experiment("tiny")


@pytest.fixture
def config_with(tmp_path: Path):
    """Write a config with the given experiments (name -> section) into tmp_path; returns its path."""
    return lambda experiments: write_config(tmp_path, experiments)


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A config file with one experiment, `tiny`, writing its results under tmp_path/results."""
    return write_config(tmp_path, {"tiny": TINY_EXPERIMENT})


@pytest.fixture(scope="session")
def debian_fashion_mnist():
    """Skip without the files of Debian's dataset-fashion-mnist, except under CI, which must not skip silently."""
    from graphprune.data.splits import FASHION_MNIST_DEBIAN_DIR, FASHION_MNIST_FILES

    absent = [name for name in FASHION_MNIST_FILES if not (FASHION_MNIST_DEBIAN_DIR / f"{name}.gz").is_file()]
    if absent:
        reason = f"{FASHION_MNIST_DEBIAN_DIR} lacks {absent}: apt-get install dataset-fashion-mnist"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the test must run, not skip)")
        pytest.skip(reason)


def self_labelled_search(model, images, calibration_images: int):
    """(groups, cost, search evaluator, graph) of `model`, the evaluator's labels being the model's own predictions
    on `images` (so the unpruned network scores 1.0); for agents on toy networks without a dataset."""
    import torch

    from graphprune.network.cost import CostModel
    from graphprune.network.graph import build_graph
    from graphprune.network.pruning import ChannelGroups
    from graphprune.network.search_eval import SearchEvaluator

    with torch.no_grad():
        labels = model(images).argmax(1)
    groups = ChannelGroups(model, tuple(images.shape[1:]))
    cost = CostModel(model, groups)
    evaluator = SearchEvaluator(model, groups, images, labels, [images[:calibration_images]], recalibrate_bn=False)
    return groups, cost, evaluator, build_graph(model, groups, cost, images[:32])


@pytest.fixture(scope="session")
def tiny_agent(tmp_path_factory) -> Path:
    """agent.pt of a shared agent trained for one iteration on a small conv net: any method test can use
    gat_ppo_transfer with it (the agent reads any network's graph)."""
    import torch
    from torch import nn

    from graphprune.methods.base import MethodContext
    from graphprune.methods.gat_ppo.shared import SharedAgentTrainer, TrainingTask
    from graphprune.methods.settings import AgentSettings
    from graphprune.network.cost import parse_target

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    groups, cost, evaluator, graph = self_labelled_search(model, torch.randn(64, 1, 8, 8), calibration_images=32)
    out = tmp_path_factory.mktemp("tiny-agent")
    task = TrainingTask("tiny", MethodContext(model, groups, cost, graph, evaluator), parse_target("flops0.5"), {})
    settings = AgentSettings(episodes_per_iteration=4, num_envs=2, policy={"budget_prior": True, "hidden": 16})
    trainer = SharedAgentTrainer([task], settings, iterations=1, seed=0, out_dir=out)
    try:
        trainer.run()
    finally:
        trainer.close()
    return out / "agent.pt"
