"""How a group member's module channels map onto the group's root channels, and per-root-channel reductions.

A `GroupMember`'s `channels[j]` lists the module channels that belong to root channel j (usually one; several
where a flatten expands one channel into many features). The cost model, the graph features and the
heuristic channel scores all read a member this way.
"""

from __future__ import annotations

import torch
from torch import Tensor

from graphprune.network.pruning import GroupMember


def member_channels(member: GroupMember) -> tuple[Tensor, Tensor]:
    """(module channel index, root channel it belongs to), both [M] int64, flattened over `member.channels`."""
    index = [i for idxs in member.channels for i in idxs]
    owner = [j for j, idxs in enumerate(member.channels) for _ in idxs]
    return torch.tensor(index, dtype=torch.long), torch.tensor(owner, dtype=torch.long)


def per_root_channel(member: GroupMember, values: Tensor, mean: bool = False) -> Tensor:
    """values: [W] per module channel (CPU) -> [R] per root channel, R = len(member.channels): the sum over the
    module channels a root channel owns (`mean=True`: their mean; 0 for one that owns none), in values' dtype,
    added in module-channel order."""
    index, owner = member_channels(member)
    size = len(member.channels)
    total = torch.zeros(size, dtype=values.dtype).index_add_(0, owner, values[index])
    return total / torch.bincount(owner, minlength=size).clamp(min=1) if mean else total
