"""The heuristic comparison systems (docs/BASELINES.md): random, random_search, l1_ratio_search,
depgraph_ratio_search, l1_uniform, global_bn, depgraph.

Each turns (trained model, budget) into a mask meeting the budget, with the shared arithmetic of `base`:
a uniform keep ratio by bisection (`random`, `l1_uniform`), a global ranking dropped to the budget
(`global_bn`, `depgraph`), or random per-group ratios scored by the search evaluator (`random_search`, `l1_ratio_search`,
`depgraph_ratio_search`).
Channel scores come from `methods.importance`; nothing here trains, changes or evaluates the model itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphprune.methods.base import (
    MethodContext,
    MethodResult,
    NoSettings,
    PruningMethod,
    keep_top,
    largest_scaled_counts,
    random_channels,
    register,
    remove_to_budget,
)
from graphprune.methods.importance import bn_gamma_scores, depgraph_scores, filter_l1_scores, get_importance
from graphprune.methods.settings import RatioSearchSettings
from graphprune.network.cost import Budget
from graphprune.network.pruning import Mask


@register("random")
class RandomUniform(PruningMethod):
    """The same keep ratio in every group (the largest that meets the budget), channels drawn at random."""

    def choose(self, context: MethodContext, budget: Budget, settings: NoSettings) -> MethodResult:
        counts = largest_scaled_counts(context.cost, budget, np.ones(len(context.groups)))
        mask = random_channels(counts, context.groups.sizes, np.random.default_rng(context.seed))
        return MethodResult(mask, {"notes": "uniform keep ratio, random channels"})


@register("l1_uniform")
class L1Uniform(PruningMethod):
    """The same keep ratio in every group (the largest that meets the budget), keeping the filters of largest
    L1 norm (Li et al. 2017). See `filter_l1_scores` for coupled groups."""

    def choose(self, context: MethodContext, budget: Budget, settings: NoSettings) -> MethodResult:
        counts = largest_scaled_counts(context.cost, budget, np.ones(len(context.groups)))
        mask = keep_top(filter_l1_scores(context.model, context.groups), counts)
        return MethodResult(mask, {"notes": "uniform keep ratio, largest filter L1 norms kept"})


@register("global_bn")
class GlobalBatchNorm(PruningMethod):
    """Network slimming style: one global ranking of BN |gamma|, lowest removed until the budget is met
    exactly. See `bn_gamma_scores` for coupled groups and groups without BN."""

    def choose(self, context: MethodContext, budget: Budget, settings: NoSettings) -> MethodResult:
        scores = bn_gamma_scores(context.model, context.groups)
        mask = remove_to_budget(context.groups.full_mask(), context.cost, budget, scores)
        return MethodResult(mask, {"notes": "global BN |gamma| ranking, removed to the budget"})


@register("depgraph")
class DepGraph(PruningMethod):
    """Torch-Pruning's group magnitude importance (DepGraph, Fang et al. 2023), ranked globally and removed to
    the budget. See `depgraph_scores`."""

    def choose(self, context: MethodContext, budget: Budget, settings: NoSettings) -> MethodResult:
        scores = depgraph_scores(context.model, context.groups)
        mask = remove_to_budget(context.groups.full_mask(), context.cost, budget, scores)
        return MethodResult(mask, {"notes": "Torch-Pruning GroupMagnitudeImportance (p=2, mean), global ranking"})


# Draws per evaluation before a ratio search gives up finding new masks (a tiny network may have fewer
# distinct masks under the budget than the search may score).
_DRAWS_PER_EVALUATION = 20


class RatioSearch(PruningMethod):
    """Random per-group keep ratios scaled to the budget, inside each group the channels of largest
    `importance` (a `methods.importance` name) kept; the best by search accuracy (the first found wins ties)
    once the evaluations are spent."""

    settings_type = RatioSearchSettings
    needs_evaluator = True
    importance = ""  # which channels each group keeps
    description = ""

    def channel_chooser(self, context: MethodContext) -> Callable[[np.ndarray, np.random.Generator], Mask]:
        """(kept counts per group, rng) -> the mask keeping those counts."""
        scores = get_importance(self.importance)(context.model, context.groups)
        return lambda counts, rng: keep_top(scores, counts)

    def choose(self, context: MethodContext, budget: Budget, settings: RatioSearchSettings) -> MethodResult:
        rng = np.random.default_rng(context.seed)
        evaluator, keep = context.evaluator, self.channel_chooser(context)
        best_mask, best_accuracy, accuracies = None, -np.inf, []
        for _ in range(_DRAWS_PER_EVALUATION * evaluator.limit):
            if evaluator.exhausted:
                break
            ratios = rng.uniform(settings.min_ratio, 1.0, size=len(context.groups))
            mask = keep(largest_scaled_counts(context.cost, budget, ratios), rng)
            accuracy = float(evaluator(mask))
            accuracies.append(accuracy)
            if accuracy > best_accuracy:
                best_mask, best_accuracy = mask, accuracy
        return MethodResult(best_mask, {
            "draws": len(accuracies), "best_search_top1": best_accuracy,
            "mean_search_top1": float(np.mean(accuracies)),
            "notes": f"best of {evaluator.masks_evaluated} random per-group ratio masks ({self.description}) by "
                     "search accuracy",
        })


@register("random_search")
class RandomSearch(RatioSearch):
    """Random per-group keep ratios, random channels inside each group (the control that learns nothing)."""

    description = "random channels"

    def channel_chooser(self, context: MethodContext) -> Callable[[np.ndarray, np.random.Generator], Mask]:
        return lambda counts, rng: random_channels(counts, context.groups.sizes, rng)


@register("l1_ratio_search")
class L1RatioSearch(RatioSearch):
    """Random per-group keep ratios, the largest-L1 filters kept inside each group: separates "found a good
    per-group allocation" from "learned which channels matter" (docs/BASELINES.md)."""

    importance, description = "filter_l1", "largest filter L1 norms kept"


@register("depgraph_ratio_search")
class DepGraphRatioSearch(RatioSearch):
    """Random per-group keep ratios, the channels of largest DepGraph group importance kept inside each group:
    the ratio search over the stronger one-shot ranking (`depgraph_scores`: producer and consumer weights)."""

    importance, description = "depgraph", "largest DepGraph group importance kept"
