"""The heuristic comparison systems (docs/BASELINES.md): random, random_search, l1_ratio_search,
depgraph_ratio_search, l1_uniform, global_bn, depgraph.

Each turns (trained model, budget) into a mask meeting the budget, with the shared arithmetic of `base`:
a uniform keep ratio by bisection (`random`, `l1_uniform`), a global ranking dropped to the budget
(`global_bn`, `depgraph`), or random per-group ratios scored by the search evaluator (`random_search`, `l1_ratio_search`,
`depgraph_ratio_search`).
Channel scores are read from the model's weights; nothing here trains, changes or evaluates the model itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

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
from graphprune.methods.settings import RatioSearchSettings
from graphprune.network.cost import Budget
from graphprune.network.pruning import ChannelGroups, GroupMember, Mask, build_dependency_graph
from graphprune.network.root_channels import per_root_channel

_FILTER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)  # layers whose weight rows are output-channel filters


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
    """Random per-group keep ratios scaled to the budget; which channels each group keeps is `keep`'s choice;
    the best by search accuracy (the first found wins ties) once the evaluations are spent."""

    settings_type = RatioSearchSettings
    needs_evaluator = True
    description = ""

    def channel_chooser(self, context: MethodContext) -> Callable[[np.ndarray, np.random.Generator], Mask]:
        """(kept counts per group, rng) -> the mask keeping those counts."""
        raise NotImplementedError

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

    description = "largest filter L1 norms kept"

    def channel_chooser(self, context: MethodContext) -> Callable[[np.ndarray, np.random.Generator], Mask]:
        scores = filter_l1_scores(context.model, context.groups)
        return lambda counts, rng: keep_top(scores, counts)


@register("depgraph_ratio_search")
class DepGraphRatioSearch(RatioSearch):
    """Random per-group keep ratios, the channels of largest DepGraph group importance kept inside each group:
    the ratio search over the stronger one-shot ranking (`depgraph_scores`: producer and consumer weights)."""

    description = "largest DepGraph group importance kept"

    def channel_chooser(self, context: MethodContext) -> Callable[[np.ndarray, np.random.Generator], Mask]:
        scores = depgraph_scores(context.model, context.groups)
        return lambda counts, rng: keep_top(scores, counts)


# -------------------------------------------------------------------------------------------- channel scores


def filter_l1_scores(model: nn.Module, groups: ChannelGroups) -> list[np.ndarray]:
    """Per group, [size]: the L1 norm of each channel's filters, summed over every conv/linear layer that writes
    the group's channels (the root alone for a plain layer; all convs feeding a residual add for a coupled
    group; the expand conv and the depthwise conv of a MobileNet block)."""
    return _filter_norm_scores(model, groups, p=1)


def filter_l2_scores(model: nn.Module, groups: ChannelGroups) -> list[np.ndarray]:
    """Per group, [size]: the L2 norm of each channel's filters, all the conv/linear layers that write the
    group's channels taken together as one vector (GNN-RL's `ln_structured(n=2)` ranking, extended to coupled
    groups as in `filter_l1_scores`)."""
    return _filter_norm_scores(model, groups, p=2)


def consumer_l1_scores(model: nn.Module, groups: ChannelGroups) -> list[np.ndarray]:
    """Per group, [size]: the mean |w| of the weights that READ each channel (the input slices of every conv and
    linear layer consuming the group's channels), averaged over those layers; zeros where nothing reads them.
    Filter norms look at what writes a channel; this is what the network does with it downstream."""
    modules = dict(model.named_modules())
    scores = []
    for group in groups.groups:
        readers = [m for m in group.members if m.kind == "in" and isinstance(modules[m.module], _FILTER_TYPES)]
        total = np.zeros(group.size)
        for member in readers:
            total += per_root_channel(member, _input_slice_l1(modules[member.module]).double(), mean=True).numpy()
        scores.append(total / max(len(readers), 1))
    return scores


def _input_slice_l1(module: nn.Module) -> torch.Tensor:
    """[in_channels]: mean |w| over the weights that read each input channel (of a conv, within its group)."""
    weight = module.weight.detach().abs().float().cpu()
    groups = getattr(module, "groups", 1)
    if groups == 1:
        return weight.transpose(0, 1).flatten(1).mean(1)
    # grouped conv: input channel i meets only the filters of its group, at column i % (in / groups)
    per_group_out = weight.shape[0] // groups
    by_group = weight.reshape(groups, per_group_out, weight.shape[1], -1)  # [g, out/g, in/g, k*k]
    return by_group.transpose(1, 2).flatten(2).mean(2).flatten()  # [g * in/g] in input-channel order


def _filter_norm_scores(model: nn.Module, groups: ChannelGroups, p: int) -> list[np.ndarray]:
    """Per group, [size]: the Lp norm of each root channel's filters over every layer that writes it."""
    modules = dict(model.named_modules())
    scores = []
    for group in groups.groups:
        total = np.zeros(group.size)
        for member in _out_members(group.members, modules, _FILTER_TYPES):
            weight = modules[member.module].weight.detach()
            total += _per_root_sum(member, weight.abs().pow(p).flatten(1).sum(1))
        scores.append(total if p == 1 else total ** (1.0 / p))
    return scores


def bn_gamma_scores(model: nn.Module, groups: ChannelGroups) -> list[np.ndarray]:
    """Per group, [size]: |gamma| of the batch norm writing the channel (the mean over them where several BNs
    write a coupled group, e.g. a residual stream). Groups without an affine BN fall back to their filter L1
    norms divided by the group's mean and scaled to the network's mean |gamma|, so they rank in the middle."""
    modules = dict(model.named_modules())
    l1 = filter_l1_scores(model, groups)
    gammas: list[np.ndarray | None] = []
    for group in groups.groups:
        bns = [m for m in _out_members(group.members, modules, (nn.modules.batchnorm._BatchNorm,)) if modules[m.module].affine]
        if not bns:
            gammas.append(None)
            continue
        total = sum(_per_root_sum(m, modules[m.module].weight.detach().abs()) for m in bns)
        gammas.append(total / len(bns))
    known = [g for g in gammas if g is not None]
    typical_gamma = float(np.mean(np.concatenate(known))) if known else 1.0
    return [
        gamma if gamma is not None else l1[g] / max(float(l1[g].mean()), 1e-12) * typical_gamma
        for g, gamma in enumerate(gammas)
    ]


def depgraph_scores(model: nn.Module, groups: ChannelGroups) -> list[np.ndarray]:
    """Per group, [size]: Torch-Pruning's `GroupMagnitudeImportance` (L2 norm over every coupled parameter
    slice, in and out, averaged over the group's layers, divided by the group's mean), computed on the full
    group as DepGraph's global pruning does."""
    graph = build_dependency_graph(model, groups.input_shape)
    modules = dict(model.named_modules())
    importance = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer="mean")
    scores = []
    with torch.no_grad():
        for group in groups.groups:
            root = modules[group.root]
            pruning_fn = graph.get_pruner_of_module(root).prune_out_channels
            tp_group = graph.get_pruning_group(root, pruning_fn, idxs=list(range(group.size)))
            scores.append(importance(tp_group).detach().cpu().double().numpy())
    return scores


def _out_members(members: tuple[GroupMember, ...], modules: dict, types: tuple[type, ...]) -> list[GroupMember]:
    return [m for m in members if m.kind == "out" and isinstance(modules[m.module], types)]


def _per_root_sum(member: GroupMember, values: torch.Tensor) -> np.ndarray:
    """values: [W] per module channel -> [size] per root channel, summed in float64."""
    return per_root_channel(member, values.detach().double().cpu()).numpy()
