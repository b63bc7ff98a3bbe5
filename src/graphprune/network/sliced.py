"""The pruned network's forward without building it: the model's own modules run on parameters and BN
statistics sliced to the kept channels (`torch.func.functional_call`), so scoring a mask costs what the
pruned network costs, with no copy of the model and no hooks.

Physical pruning (`pruning.prune_model`, Torch-Pruning) deep-copies the model and traces it again: ~30 ms
for ResNet-20, a third of a search evaluation. Slicing tensors takes under a millisecond, but it only works
where a module's forward reads nothing but its tensors: plain convolutions (one group, not transposed),
linear and batch-norm layers, and where the forward takes no channel count from elsewhere (a hard-coded
`view`). `SlicedNetwork.supports` checks the first, `agrees_with_masking` the second; the search evaluator
falls back to masking (`pruning.ChannelMasker`) where either fails.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from graphprune.network.evaluate import BN_TYPES, batch_norm_calibration, evaluation_mode
from graphprune.network.pruning import ChannelGroups, Mask, masked_vs_pruned_difference

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Largest logit difference between the sliced and the masked forward that counts as float rounding.
AGREEMENT_TOLERANCE = 1e-3
# What a group's "out" member slices along dim 0, besides the weight.
_PER_CHANNEL = ("bias", "running_mean", "running_var")


class SlicedNetwork:
    """`model` as pruned by a mask, run through its own modules: `forward(tensors(mask), x)`, where
    `recalibrated(mask, batches)` gives the tensors with fresh BN statistics (as `recalibrate_batch_norm`).

    The model itself is never changed: its tensors are only read (sliced copies are passed in their place).
    """

    def __init__(self, model: nn.Module, groups: ChannelGroups):
        if not self.supports(model, groups):
            raise ValueError("a group touches a module that cannot be sliced; use ChannelMasker")
        self.model, self.groups = model, groups
        self._bn_names = {name for name, m in model.named_modules() if isinstance(m, BN_TYPES)}
        self._modules = dict(model.named_modules())  # looked up for every mask: built once

    @staticmethod
    def supports(model: nn.Module, groups: ChannelGroups) -> bool:
        """True when every module the groups touch computes from its own tensors only."""
        modules = dict(model.named_modules())
        for group in groups.groups:
            for member in group.members:
                module = modules[member.module]
                if isinstance(module, _CONV_TYPES):
                    if module.groups != 1 or module.transposed:
                        return False
                elif isinstance(module, BN_TYPES):
                    if member.kind != "out":  # a BN layer's channels are its outputs
                        return False
                elif not isinstance(module, nn.Linear):
                    return False
        return True

    def agrees_with_masking(self, seed: int = 0) -> bool:
        """Whether the sliced forward gives the masked network's outputs (eval mode, a random batch) for a
        mask that prunes every other channel: false where the forward breaks or reads a channel count that
        slicing does not change."""
        mask = Mask.from_keep_flags([torch.arange(size) % 2 == 0 for size in self.groups.sizes])
        tensors = self.tensors(mask)
        try:
            with evaluation_mode(self.model):
                difference = masked_vs_pruned_difference(self.model, lambda x: self.forward(tensors, x),
                                                         self.groups, mask, seed)
        except RuntimeError:  # shapes that do not fit
            return False
        return difference <= AGREEMENT_TOLERANCE

    def tensors(self, mask: Mask) -> dict[str, Tensor]:
        """The model's parameters and buffers by name, those of pruned channels removed; BN statistics are
        copies, so calibrating them leaves the model's own alone."""
        self.groups.check(mask)
        state = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        for (module, kind), keep in self._kept_indices(mask).items():
            prefix = f"{module}." if module else ""
            weight = prefix + "weight"
            if weight in state:
                state[weight] = state[weight].index_select(0 if kind == "out" else 1, keep)
            if kind == "out":
                for name in _PER_CHANNEL:
                    if state.get(prefix + name) is not None:
                        state[prefix + name] = state[prefix + name].index_select(0, keep)
        for module in self._bn_names:  # index_select copies the pruned ones; copy the others too
            prefix = f"{module}." if module else ""
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                if state.get(prefix + name) is not None:
                    state[prefix + name] = state[prefix + name].clone()
        return state

    def forward(self, tensors: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.model, tensors, (x,), strict=False)

    def recalibrated(self, mask: Mask, batches: Iterable[Tensor]) -> dict[str, Tensor]:
        """`tensors(mask)` with every BN layer's statistics replaced by the average of its batch statistics
        over `batches`, as `evaluate.recalibrate_batch_norm` gives the pruned network."""
        tensors = self.tensors(mask)
        for module in self._bn_names:
            prefix = f"{module}." if module else ""
            if prefix + "running_mean" in tensors:  # reset_running_stats, on the copies
                tensors[prefix + "running_mean"].zero_()
                tensors[prefix + "running_var"].fill_(1.0)
                tensors[prefix + "num_batches_tracked"].zero_()
        with batch_norm_calibration(self.model), torch.no_grad():
            for batch in batches:
                self.forward(tensors, batch)
        return tensors

    def _kept_indices(self, mask: Mask) -> dict[tuple[str, str], Tensor]:
        """(module, "out"|"in") -> the indices of its channels that stay, for every module a pruned group
        touches (one module's inputs may come from several groups, e.g. after a concatenation)."""
        pruned: dict[tuple[str, str], set[int]] = {}
        for group in self.groups.groups:
            channels = mask.pruned(group.index)
            if not channels:
                continue
            for member in group.members:
                pruned.setdefault((member.module, member.kind), set()).update(
                    i for j in channels for i in member.channels[j])
        kept = {}
        for (name, kind), gone in pruned.items():
            width = _width(self._modules[name], kind)
            device = next(self._modules[name].parameters()).device
            kept[(name, kind)] = torch.tensor([i for i in range(width) if i not in gone], dtype=torch.long,
                                              device=device)
        return kept


def _width(module: nn.Module, kind: str) -> int:
    """How many output ("out") or input ("in") channels `module` has."""
    if isinstance(module, BN_TYPES):
        return module.num_features
    if isinstance(module, nn.Linear):
        return module.out_features if kind == "out" else module.in_features
    return module.out_channels if kind == "out" else module.in_channels
