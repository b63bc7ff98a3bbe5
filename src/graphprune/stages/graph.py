"""The `graph` stage: build the graph of an experiment's trained baseline; write results/<exp>/graph.pt.

Inputs: results/<exp>/baseline/model.pt. Outputs: graph.pt (`NetworkGraph.save`, tensors and strings only)
and graph.json (its summary, the groups and the build settings), both written atomically. The calibration
batch is a seeded draw from the training split, so a rerun gives the same graph; search and test images are
never used.
"""

from __future__ import annotations

import logging

import torch

from graphprune.checkpoint import atomic_write_json, load_model
from graphprune.config import Config, Experiment
from graphprune.data.splits import load_splits
from graphprune.errors import GraphpruneError
from graphprune.network.cost import CostModel
from graphprune.network.graph import CALIBRATION_IMAGES, TOP_K, NetworkGraph, build_graph
from graphprune.network.pruning import ChannelGroups
from graphprune.train import resolve_device, seed_everything

log = logging.getLogger(__name__)


def extract_graph(
    config: Config, experiment: Experiment, *, device: str | None = None, top_k: int = TOP_K,
    calibration_size: int = CALIBRATION_IMAGES,
) -> NetworkGraph:
    """Build and write the graph of `experiment`'s baseline; returns it."""
    paths = config.paths(experiment.name)
    torch_device = resolve_device(device or config.device)
    model = load_model(paths.baseline_model()).model.to(torch_device)
    groups = ChannelGroups(model, experiment.model.input_shape)
    cost = CostModel(model, groups)
    calibration = calibration_batch(experiment, calibration_size)
    graph = build_graph(model, groups, cost, calibration.to(torch_device), top_k=top_k)
    graph.save(paths.graph())
    atomic_write_json({
        "experiment": experiment.name,
        "model": experiment.model.to_dict(),
        "calibration": {"split": "train", "images": calibration.shape[0], "seed": experiment.seed},
        "channel_groups": groups.summary(),
        **graph.summary(),
    }, paths.graph_summary())
    log.info("wrote %s and %s", paths.graph(), paths.graph_summary())
    return graph


def calibration_batch(experiment: Experiment, size: int) -> torch.Tensor:
    """[size, C, H, W] training images drawn with the experiment's seed (augmentations included, seeded too).

    The same images as `search_setup.graph_from_training_images` (the API's graph) on a split without random
    augmentation; on an augmented one the draws differ (here every global generator is seeded and no
    DataLoader draws its base seed first). Kept apart so that no graph changes; one sampler for both is a
    deliberate change of results (issue 26)."""
    if size < 1:
        raise GraphpruneError(f"the calibration batch needs at least one image, got {size}")
    train = load_splits(experiment.dataset).train
    generator = torch.Generator().manual_seed(experiment.seed)
    chosen = torch.randperm(len(train), generator=generator)[:size].tolist()
    seed_everything(experiment.seed)  # training augmentations draw from the global generators
    return torch.stack([train[i][0] for i in chosen])
