"""Run one pruning method for one (experiment, target): the `search` stage of the pipeline.

Loads the trained baseline, its channel groups, cost model, graph and a search-split evaluator, runs the
method through the common interface, and writes the chosen mask (`mask.pt`) and the search record
(`search/record.json`, with the mask's search accuracy). Never touches the test split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from graphprune.checkpoint import atomic_write_json, load_model
from graphprune.config import Config, Experiment, SearchSettings
from graphprune.data.splits import load_splits
from graphprune.errors import GraphpruneError
from graphprune.methods.base import MethodContext, get_method
from graphprune.network.cost import CostModel, parse_target
from graphprune.network.latency import latency_model
from graphprune.network.pruning import ChannelGroups, save_mask
from graphprune.network.search_eval import SearchEvaluator, build_search_evaluators
from graphprune.train import resolve_device

if TYPE_CHECKING:
    from graphprune.network.graph import NetworkGraph

log = logging.getLogger(__name__)


@dataclass
class PruningSetup:
    """Everything a method needs for one experiment, built once."""

    experiment: Experiment
    model: torch.nn.Module
    groups: ChannelGroups
    cost: CostModel
    evaluator: SearchEvaluator
    graph_file: Path  # written by `graphprune graph`
    reselect: SearchEvaluator | None = None  # held-out search images for the final choice (search.reselect_*)

    @cached_property
    def graph(self) -> NetworkGraph | None:
        """The network graph, if built; read on first use (loading it imports torch-geometric, ~3 s), so the
        methods that do not read it never pay for it."""
        from graphprune.network.graph import NetworkGraph

        if not self.graph_file.exists():
            return None
        graph = NetworkGraph.load(self.graph_file)
        if tuple(graph.group_sizes) != self.groups.sizes:
            raise GraphpruneError(f"{self.graph_file} was built for another network; rerun `graphprune graph`")
        return graph


def load_setup(config: Config, experiment: Experiment, device: str | None = None,
               seed: int | None = None) -> PruningSetup:
    """The baseline of `experiment` with its groups, cost model, evaluators and (if built) graph. The search
    and reselection images and the calibration batches are drawn by `seed` (the search seed; default the
    experiment's), so every seed of a search scores its own images."""
    paths = config.paths(experiment.name)
    checkpoint = load_model(paths.baseline_model())
    torch_device = resolve_device(device or config.device)
    model = checkpoint.model.to(torch_device)
    groups = ChannelGroups(model, checkpoint.spec.input_shape, min_channels=experiment.search.min_channels)
    cost = CostModel(model, groups)
    splits = load_splits(experiment.dataset)
    s = experiment.search
    evaluator, reselect = build_search_evaluators(
        model, groups, splits.search, splits.train, search_images=s.search_images,
        reselect_images=reselect_images(s, len(splits.search)), calibration_batches=s.calibration_batches,
        calibration_batch_size=s.calibration_batch_size, recalibrate_bn=s.recalibrate_bn,
        seed=experiment.seed if seed is None else seed, device=torch_device,
    )
    return PruningSetup(experiment, model, groups, cost, evaluator, Path(paths.graph()), reselect)


def reselect_images(search: SearchSettings, search_split: int) -> int:
    """Search-split images kept for the final rescoring: 0 when it is off, else the configured count or a
    third of the split."""
    if not search.reselect_candidates:
        return 0
    return search.reselect_images if search.reselect_images is not None else search_split // 3


def _held_out_share(setup: PruningSetup) -> float:
    """The held-out images' share of all search-split images the final choice sees (0 without reselection)."""
    if setup.reselect is None:
        return 0.0
    held_out = len(setup.reselect.labels)
    return held_out / (held_out + len(setup.evaluator.labels))


def run_search(config: Config, setup: PruningSetup, method: str, target: str, seed: int) -> dict[str, Any]:
    """Choose a mask with `method` (a registry or variant name) under `target`, seeded by `seed`; write mask.pt
    and search/record.json; return the record."""
    experiment = setup.experiment
    if method not in experiment.methods:
        log.warning("method %s is not in experiment %s's methods list", method, experiment.name)
    paths = config.paths(experiment.name)
    search_dir = Path(paths.search_dir(method, target, seed))
    search_dir.mkdir(parents=True, exist_ok=True)
    budget = parse_target(target)
    if budget.metric == "latency" and setup.cost.latency is None:
        setup.cost.with_latency(latency_model(setup.model, setup.groups, experiment.search.latency))
    pruning_method = get_method(experiment.base_method(method))
    graph = setup.graph if pruning_method.needs_graph else None
    context = MethodContext(setup.model, setup.groups, setup.cost, graph, setup.evaluator, seed=seed,
                            out_dir=search_dir, evaluations=experiment.evaluations(method),
                            reselect=setup.reselect, reselect_candidates=experiment.search.reselect_candidates,
                            reselect_weight=_held_out_share(setup))
    settings = experiment.method_settings(method)
    if experiment.base_method(method) == "gat_ppo_transfer":  # a configured agent is read from its results
        settings["agent"] = config.agent_file(settings["agent"])
    result = pruning_method.search(context, budget, settings)
    # search_top1: the chosen mask on the search images, a maximum over the masks scored (selection bias);
    # reselect_top1, where present: the result on held-out search images (unbiased when reselect_candidates is 1).
    record = {**result.record, "method": method, "base_method": experiment.base_method(method), "seed": seed,
              "search_top1": setup.evaluator(result.mask), "search_images": len(setup.evaluator.labels), "settings": settings, "threads": torch.get_num_threads(),
              "kept_per_group": list(result.mask.counts), "group_sizes": list(setup.groups.sizes),
              "group_roots": list(setup.groups.roots)}
    save_mask(paths.mask(method, target, seed), result.mask, setup.groups)
    atomic_write_json(record, paths.search_record(method, target, seed))
    return record
