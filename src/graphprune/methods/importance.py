"""Channel importance: how much each channel of a group matters, one score per root channel (higher: keep first).

An importance is a callable `(model, groups) -> [per group: np.ndarray of its size]` that reads the model's
weights only (no data, no training), registered here under a name, as Torch-Pruning keeps its `Importance`
classes in one module. Methods take them by name: the ratio searches rank the channels inside each group by
one (`RatioSearch.importance`), AMC keeps each layer's top filter-L1 channels and GNN-RL its top filter-L2
ones, gat_ppo's channel prior and repair read `policy.prior_score`, and the global one-shot rankings
(`global_bn`, `depgraph`) drop the lowest across groups.

A new importance is one function here decorated `@register_importance("name")`, plus its name in
`methods/index.py: IMPORTANCE_NAMES` (the config checks names without importing torch); then every method
setting that names an importance (`policy.prior_score`) accepts it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from graphprune.errors import GraphpruneError
from graphprune.methods.index import IMPORTANCE_NAMES
from graphprune.network.pruning import ChannelGroups, GroupMember, build_dependency_graph
from graphprune.network.root_channels import per_root_channel

Importance = Callable[[nn.Module, ChannelGroups], list[np.ndarray]]
IMPORTANCES: dict[str, Importance] = {}

_FILTER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)  # layers whose weight rows are output-channel filters


def register_importance(name: str) -> Callable[[Importance], Importance]:
    """Decorator: make a channel score available under `name` (listed in `index.IMPORTANCE_NAMES`)."""
    def add(function: Importance) -> Importance:
        if name in IMPORTANCES:
            raise ValueError(f"importance {name!r} is registered twice")
        IMPORTANCES[name] = function
        return function
    return add


def get_importance(name: str) -> Importance:
    """The registered channel score `name`; a clear error for an unknown or unregistered one."""
    if name not in IMPORTANCES:
        known = ", ".join(IMPORTANCE_NAMES)
        where = "" if name not in IMPORTANCE_NAMES else " (indexed but not registered in graphprune.methods.importance)"
        raise GraphpruneError(f"unknown channel importance {name!r}{where}; known: {known}")
    return IMPORTANCES[name]


@register_importance("filter_l1")
def filter_l1_scores(model: nn.Module, groups: ChannelGroups) -> list[np.ndarray]:
    """Per group, [size]: the L1 norm of each channel's filters, summed over every conv/linear layer that writes
    the group's channels (the root alone for a plain layer; all convs feeding a residual add for a coupled
    group; the expand conv and the depthwise conv of a MobileNet block)."""
    return _filter_norm_scores(model, groups, p=1)


@register_importance("filter_l2")
def filter_l2_scores(model: nn.Module, groups: ChannelGroups) -> list[np.ndarray]:
    """Per group, [size]: the L2 norm of each channel's filters, all the conv/linear layers that write the
    group's channels taken together as one vector (GNN-RL's `ln_structured(n=2)` ranking, extended to coupled
    groups as in `filter_l1_scores`)."""
    return _filter_norm_scores(model, groups, p=2)


@register_importance("consumer_l1")
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


@register_importance("bn_gamma")
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


@register_importance("depgraph")
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
