"""The one way a search is assembled, for the pipeline's `search` stage, `graphprune.prune` and the CLI.

The steps and their order live here only: the method and its settings are parsed before anything is traced
(`parse_request`: a misspelt method or setting fails at once); the network is traced into channel groups and
priced (`CostModel`, plus the latency table for a latency budget); the search images, the held-out images of
the final rescoring and the BN-calibration batches are drawn by the search seed through one sampler
(`network.search_eval.build_search_evaluators`); the graph is read or built only for a method that reads it;
and `MethodContext` is filled in (`SearchSetup.context`). This module reads no config and writes no file:
its callers say where the network, the images and the graph come from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

from graphprune.errors import GraphpruneError
from graphprune.methods.base import MethodContext, PruningMethod, get_method
from graphprune.network.cost import METRICS, Budget, CostModel, parse_target
from graphprune.network.latency import latency_model
from graphprune.network.pruning import ChannelGroups
from graphprune.network.search_eval import SearchEvaluator, build_search_evaluators, materialize

if TYPE_CHECKING:
    from graphprune.network.graph import NetworkGraph


@dataclass(frozen=True)
class SearchRequest:
    """What to search for, parsed and checked before any tracing: the method (a registry name), its typed
    settings and the budget."""

    name: str
    method: PruningMethod
    settings: Any  # the method's settings dataclass
    budget: Budget


def parse_request(method: str, target: str, settings: Mapping[str, Any] | None = None) -> SearchRequest:
    """The request for `method` (a registry name) under `target` (e.g. "flops0.5"); raises GraphpruneError for
    an unknown method, target or setting before anything is loaded or traced."""
    budget = parse_target(target)
    pruning_method = get_method(method)
    return SearchRequest(method, pruning_method, pruning_method.parse_settings(settings), budget)


@dataclass(frozen=True)
class ImageDraw:
    """How a search's images are drawn from the search split (and the calibration batches from train)."""

    search_images: int | None  # images scored per mask (None: all the search split holds beyond the held-out)
    reselect_images: int  # held out for rescoring the final choice (0: none)
    calibration_batches: int
    calibration_batch_size: int
    recalibrate_bn: bool


@dataclass
class SearchSetup:
    """Everything a method searches with, built once per network and seed: the network, its channel groups and
    cost model, the search evaluator (and the held-out one of the final rescoring), and where the graph comes
    from. Several searches (methods, budgets) may share one."""

    model: nn.Module
    groups: ChannelGroups
    cost: CostModel
    evaluator: SearchEvaluator | None
    reselect: SearchEvaluator | None = None  # held-out search images for the final choice (search.reselect_*)
    graph_source: Callable[[SearchSetup], NetworkGraph | None] | None = None  # this setup -> its graph

    @cached_property
    def graph(self) -> NetworkGraph | None:
        """The network graph (None where there is none), fetched on first use: loading or building it imports
        torch-geometric (~3 s), which the methods that never read it never pay for."""
        return self.graph_source(self) if self.graph_source is not None else None

    def price(self, budget: Budget, latency: Mapping[str, Any]) -> None:
        """Make `budget` priceable (a latency budget needs the timing table `latency` describes) and check that
        some mask meets it."""
        if METRICS[budget.metric].measured and self.cost.latency is None:
            self.cost.with_latency(latency_model(self.model, self.groups, latency))
        self.cost.check_feasible(budget)

    @property
    def held_out_share(self) -> float:
        """The held-out images' share of all search-split images the final choice sees (0 without them)."""
        if self.reselect is None or self.evaluator is None:
            return 0.0
        held_out = len(self.reselect.labels)
        return held_out / (held_out + len(self.evaluator.labels))

    def context(self, request: SearchRequest, *, seed: int, out_dir: Path | None, evaluations: int,
                reselect_candidates: int = 0) -> MethodContext:
        """The MethodContext of one search; the graph is fetched only when the method reads it."""
        graph = self.graph if request.method.needs_graph else None
        return MethodContext(self.model, self.groups, self.cost, graph, self.evaluator, seed=seed, out_dir=out_dir,
                             evaluations=evaluations, reselect=self.reselect, reselect_candidates=reselect_candidates,
                             reselect_weight=self.held_out_share)


def build_search(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    min_channels: int,
    search_set: Dataset | None,
    train_set: Dataset | None,
    draw: ImageDraw | None,
    seed: int,
    device: torch.device | str,
    graph: Callable[[SearchSetup], NetworkGraph | None] | None = None,
    budget: Budget | None = None,
    latency: Mapping[str, Any] | None = None,
    phase: Callable[[str], contextlib.AbstractContextManager] | None = None,
) -> SearchSetup:
    """Trace `model` (on `device` already) into channel groups and a cost model, price `budget` if given (a
    latency budget by the table `latency` describes), and draw the evaluators from `search_set` and `train_set`
    as `draw` says, by `seed` (no evaluators without a `draw`). `graph(setup)` fetches the graph on first use;
    `phase("trace")` times the tracing (the API's clock)."""
    with (phase or _untimed)("trace"):
        groups = channel_groups(model, input_shape, min_channels)
        cost = CostModel(model, groups)
        setup = SearchSetup(model, groups, cost, evaluator=None, graph_source=graph)
        if budget is not None:
            setup.price(budget, latency or {})
    if draw is not None:
        setup.evaluator, setup.reselect = build_search_evaluators(
            model, groups, search_set, train_set, search_images=draw.search_images,
            reselect_images=draw.reselect_images, calibration_batches=draw.calibration_batches,
            calibration_batch_size=draw.calibration_batch_size, recalibrate_bn=draw.recalibrate_bn, seed=seed,
            device=device)
    return setup


def channel_groups(model: nn.Module, input_shape: tuple[int, ...], min_channels: int) -> ChannelGroups:
    """The channel groups of `model`; a network the tracer cannot follow, or one without a prunable group, is a
    GraphpruneError that says so."""
    try:
        groups = ChannelGroups(model, input_shape, min_channels)
    except GraphpruneError:
        raise
    except Exception as exc:  # Torch-Pruning's tracer: say which model it could not follow
        raise GraphpruneError(f"the dependency analysis (Torch-Pruning) cannot trace {type(model).__name__}: "
                              f"{type(exc).__name__}: {exc}") from exc
    if not len(groups):
        excluded = "; ".join(f"{root}: {why}" for root, why in groups.excluded) or "no conv or linear layers"
        raise GraphpruneError(f"{type(model).__name__} has no prunable channel group ({excluded})")
    return groups


def graph_from_training_images(train_set: Dataset, seed: int, device: torch.device | str
                               ) -> Callable[[SearchSetup], NetworkGraph]:
    """A graph source for `build_search`: the graph built from `network.graph.CALIBRATION_IMAGES` training
    images drawn by `seed` (what `graphprune.prune` reads; the pipeline reads the `graph` stage's file)."""

    def build(setup: SearchSetup) -> NetworkGraph:
        # torch-geometric: only for the methods that read the graph
        from graphprune.network.graph import CALIBRATION_IMAGES, build_graph

        images, _ = materialize(train_set, min(CALIBRATION_IMAGES, len(train_set)), CALIBRATION_IMAGES, seed, device)
        return build_graph(setup.model, setup.groups, setup.cost, images)

    return build


@contextlib.contextmanager
def _untimed(_phase: str):
    yield
