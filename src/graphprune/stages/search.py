"""Run one pruning method for one (experiment, target): the `search` stage of the pipeline.

Loads the trained baseline and its search split, has `graphprune.search_setup` assemble the search (channel
groups, cost model, search-split evaluators, the graph the `graph` stage wrote), runs the method, and writes
the chosen mask (`mask.pt`) and the search record (`search/record.json`, with the mask's search accuracy).
Never touches the test split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from graphprune.checkpoint import atomic_write_json, load_model
from graphprune.config import Config, Experiment, SearchSettings
from graphprune.data.splits import load_splits
from graphprune.errors import GraphpruneError
from graphprune.network.pruning import save_mask
from graphprune.search_setup import ImageDraw, SearchSetup, build_search, parse_request
from graphprune.train import resolve_device

if TYPE_CHECKING:
    from graphprune.network.graph import NetworkGraph

log = logging.getLogger(__name__)


@dataclass
class PruningSetup(SearchSetup):
    """A search setup of one experiment's baseline (built by `search_setup.build_search`), with its experiment."""

    experiment: Experiment = field(kw_only=True)


def load_setup(config: Config, experiment: Experiment, device: str | None = None,
               seed: int | None = None) -> PruningSetup:
    """The baseline of `experiment` with its groups, cost model, evaluators and (if built) graph. The search
    and reselection images and the calibration batches are drawn by `seed` (the search seed; default the
    experiment's), so every seed of a search scores its own images."""
    paths = config.paths(experiment.name)
    checkpoint = load_model(paths.baseline_model())
    torch_device = resolve_device(device or config.device)
    model = checkpoint.model.to(torch_device)
    splits = load_splits(experiment.dataset)
    s = experiment.search
    draw = ImageDraw(s.search_images, reselect_images(s, len(splits.search)), s.calibration_batches,
                     s.calibration_batch_size, s.recalibrate_bn)
    graph_file = Path(paths.graph())  # written by `graphprune graph`
    setup = build_search(model, checkpoint.spec.input_shape, min_channels=s.min_channels, search_set=splits.search,
                         train_set=splits.train, draw=draw, seed=experiment.seed if seed is None else seed,
                         device=torch_device, graph=lambda built: read_graph(graph_file, built.groups.sizes))
    # The stage's setup also names its experiment (run_search reads its settings from it).
    return PruningSetup(**{f.name: getattr(setup, f.name) for f in fields(setup)}, experiment=experiment)


def read_graph(graph_file: Path, group_sizes: tuple[int, ...]) -> NetworkGraph | None:
    """The graph `graphprune graph` wrote for this baseline, None if it has not run."""
    from graphprune.network.graph import NetworkGraph

    if not graph_file.exists():
        return None
    graph = NetworkGraph.load(graph_file)
    if tuple(graph.group_sizes) != group_sizes:
        raise GraphpruneError(f"{graph_file} was built for another network; rerun `graphprune graph`")
    return graph


def reselect_images(search: SearchSettings, search_split: int) -> int:
    """Search-split images kept for the final rescoring: 0 when it is off, else the configured count or a
    third of the split."""
    if not search.reselect_candidates:
        return 0
    return search.reselect_images if search.reselect_images is not None else search_split // 3


def run_search(config: Config, setup: PruningSetup, method: str, target: str, seed: int) -> dict[str, Any]:
    """Choose a mask with `method` (a registry or variant name) under `target`, seeded by `seed`; write mask.pt
    and search/record.json; return the record."""
    experiment = setup.experiment
    if method not in experiment.methods:
        log.warning("method %s is not in experiment %s's methods list", method, experiment.name)
    settings = experiment.method_settings(method)
    if experiment.base_method(method) == "gat_ppo_transfer":  # a configured agent is read from its results
        settings["agent"] = config.agent_file(settings["agent"])
    request = parse_request(experiment.base_method(method), target, settings)
    paths = config.paths(experiment.name)
    search_dir = Path(paths.search_dir(method, target, seed))
    search_dir.mkdir(parents=True, exist_ok=True)
    setup.price(request.budget, experiment.search.latency)
    context = setup.context(request, seed=seed, out_dir=search_dir, evaluations=experiment.evaluations(method),
                            reselect_candidates=experiment.search.reselect_candidates)
    result = request.method.search(context, request.budget, request.settings)
    # search_top1: the chosen mask on the search images, a maximum over the masks scored (selection bias);
    # reselect_top1, where present: the result on held-out search images (unbiased when reselect_candidates is 1).
    record = {**result.record, "method": method, "base_method": experiment.base_method(method), "seed": seed,
              "search_top1": setup.evaluator(result.mask), "search_images": len(setup.evaluator.labels),
              "settings": settings, "threads": torch.get_num_threads(),
              "kept_per_group": list(result.mask.counts), "group_sizes": list(setup.groups.sizes),
              "group_roots": list(setup.groups.roots)}
    save_mask(paths.mask(method, target, seed), result.mask, setup.groups)
    atomic_write_json(record, paths.search_record(method, target, seed))
    return record
