"""The layer calls of a network traced once, and how each call's widths shrink with the kept channels.

`trace_layer_calls` runs the model with each group's channels NaN-marked in its own batch sample and records
every counted or channel-parametrised layer call with how much of each width pruning a group removes;
`call_width` / `conv_widths` turn that into an `Affine` width of the kept counts. The cost model
(`cost.CostModel`: FLOPs and parameters) and the latency tables (`latency.LatencyModel`: which calls to time,
at which widths) both read a network through it. This module never prunes, copies or trains a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch_pruning.utils import op_counter

from graphprune.errors import GraphpruneError
from graphprune.network.evaluate import BN_TYPES, evaluation_mode
from graphprune.network.pruning import ChannelGroups
from graphprune.network.root_channels import member_channels

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# Layers whose parameter shapes follow the channels they read and write; every other parameter keeps its
# size, because ChannelGroups excludes any group that touches a parametrised layer of another kind.
CHANNEL_LAYER_TYPES = (*CONV_TYPES, nn.Linear, *BN_TYPES)
# The trace marks pruned channels with NaN; these layers mix channels, so they read the marks and then see
# zeros (a NaN input channel would otherwise spoil every output channel).
_CHANNEL_MIXING_TYPES = (*CONV_TYPES, nn.Linear)
# The counter's per-layer formulas this module reproduces (see `_flops_form`); any other priced layer
# (recurrent, attention) is refused when the model runs it.
_REPRODUCED_COUNTERS = (
    op_counter.conv_flops_counter_hook, op_counter.linear_flops_counter_hook, op_counter.bn_flops_counter_hook,
    op_counter.ln_flops_counter_hook, op_counter.pool_flops_counter_hook, op_counter.relu_flops_counter_hook,
    op_counter.upsample_flops_counter_hook, op_counter.empty_flops_counter_hook,
)
# Upper bound on input elements per traced batch, to keep the trace's memory moderate on big inputs.
_TRACE_BATCH_ELEMENTS = 2**23


@dataclass(frozen=True)
class Affine:
    """An integer width of the pruned network as a function of the kept counts: `base + slope @ counts`.

    slope: [G] int64, how many channels/elements of this width each kept channel of group g contributes.
    """

    base: int
    slope: np.ndarray

    @classmethod
    def constant(cls, value: int, num_groups: int) -> Affine:
        return cls(int(value), np.zeros(num_groups, dtype=np.int64))

    @property
    def is_constant(self) -> bool:
        return not self.slope.any()


@dataclass
class LayerCall:
    """One traced call of a counted or channel-parametrised layer, widths of one sample of the unpruned net.

    removed[quantity]: [G] how much of the quantity ("in_elements", "out_elements", "in_channels",
    "out_channels") disappears when group g is pruned entirely (all of its channels NaN-marked).
    """

    name: str
    module: nn.Module
    in_shape: tuple[int, ...]  # without the batch dimension, e.g. [C, H, W]
    out_shape: tuple[int, ...]
    removed: dict[str, np.ndarray]


def trace_layer_calls(model: nn.Module, groups: ChannelGroups) -> list[LayerCall]:
    """Run the model with group g's channels NaN-marked in one batch sample; record every relevant layer call.

    NaN spreads along exactly the channels that physical removal deletes (through activations, pools, adds,
    concatenation, flatten, squeeze-excite products), and channel-mixing layers replace it by zeros after
    reading it, so a sample's NaN count in a tensor is what pruning its group entirely removes from it.
    """
    counted = counted_modules(model)
    modules = dict(model.named_modules())
    recorded = {name for name, m in modules.items() if name in counted or isinstance(m, CHANNEL_LAYER_TYPES)}
    marks: dict[str, list[tuple[int, torch.Tensor]]] = {}  # module -> (group, output channels it writes)
    for group in groups.groups:
        for member in group.members:
            if member.kind == "out":
                marks.setdefault(member.module, []).append((group.index, member_channels(member)[0]))

    sample_of_group: dict[int, int] = {}
    pending_inputs: dict[str, list] = {name: [] for name in recorded}
    batch_calls: list[tuple[str, tuple, tuple, dict[str, np.ndarray]]] = []  # name, shapes, NaN per sample

    def before(name: str, module: nn.Module):
        def hook(_module, inputs):
            if name in counted and op_counter.MODULES_MAPPING[type(module)] not in _REPRODUCED_COUNTERS:
                raise GraphpruneError(
                    f"cost model: cannot price {type(module).__name__} ({name}); it supports convolutional "
                    "networks (conv, linear, norms, activations, pools, upsampling)"
                )
            x = inputs[0]
            pending_inputs[name].append((tuple(x.shape[1:]), _nan_extent(x, _channel_dim(module))))
            if isinstance(module, _CHANNEL_MIXING_TYPES):
                return (torch.nan_to_num(x, nan=0.0), *inputs[1:])
            return None

        return hook

    def after(name: str, module: nn.Module):
        channel_dim = _channel_dim(module)

        def hook(_module, _inputs, output):
            for group_index, idx in marks.get(name, ()):
                sample = sample_of_group.get(group_index)
                if sample is not None:  # one sample's tensor holds its channels at dim 0 ([C, ...]) or last
                    output[sample].index_fill_(0 if channel_dim == 1 else -1, idx.to(output.device), math.nan)
            if name in recorded:
                in_shape, (in_elements, in_channels) = pending_inputs[name].pop()
                out_elements, out_channels = _nan_extent(output, channel_dim)
                batch_calls.append((name, in_shape, tuple(output.shape[1:]), {
                    "in_elements": in_elements, "in_channels": in_channels,
                    "out_elements": out_elements, "out_channels": out_channels,
                }))

        return hook

    handles = []
    for name, module in modules.items():
        if name in recorded:
            handles.append(module.register_forward_pre_hook(before(name, module)))
        if name in recorded or name in marks:
            handles.append(module.register_forward_hook(after(name, module)))

    per_batch = max(1, _TRACE_BATCH_ELEMENTS // math.prod(groups.input_shape))
    group_batches = [list(range(s, min(s + per_batch, len(groups)))) for s in range(0, len(groups), per_batch)]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    traced: list[LayerCall] = []
    try:
        with evaluation_mode(model), torch.no_grad():
            for batch in group_batches or [[]]:  # a model without prunable groups still needs its shapes
                sample_of_group.clear()
                sample_of_group.update({g: sample for sample, g in enumerate(batch)})
                batch_calls.clear()
                model(torch.randn(max(1, len(batch)), *groups.input_shape, generator=generator).to(device))
                if not traced:
                    traced = [
                        LayerCall(name, modules[name], in_shape, out_shape,
                                   {q: np.zeros(len(groups), dtype=np.int64) for q in per_sample})
                        for name, in_shape, out_shape, per_sample in batch_calls
                    ]
                if [c[0] for c in batch_calls] != [c.name for c in traced]:
                    raise GraphpruneError("cost model: the model runs different layers on different batches")
                for call, (_name, _in, _out, per_sample) in zip(traced, batch_calls, strict=True):
                    for quantity, nan_counts in per_sample.items():
                        call.removed[quantity][batch] = nan_counts[: len(batch)]
    finally:
        for handle in handles:
            handle.remove()
    return traced


def _channel_dim(module: nn.Module) -> int:
    return -1 if isinstance(module, nn.Linear) else 1


def _nan_extent(x: torch.Tensor, channel_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """x: [B, ...] -> (NaN elements per sample [B], NaN channels per sample [B]).

    Marks fill whole channels and every op between layers keeps them whole, so elements = channels x the
    elements of one channel; a float sum per channel (NaN iff a NaN was summed) is far cheaper than counting
    booleans. The first and last position of each channel are checked to catch an op that breaks this.
    """
    batch = x.shape[0]
    if x.dim() < 2:
        count = torch.count_nonzero(x.isnan()).reshape(1).expand(batch).cpu().numpy()
        return count, count
    per_channel = x.movedim(channel_dim, 1).reshape(batch, x.shape[channel_dim], -1)
    nan_channels = per_channel.sum(2).isnan()
    if not (torch.equal(per_channel[:, :, 0].isnan(), nan_channels)
            and torch.equal(per_channel[:, :, -1].isnan(), nan_channels)):
        raise GraphpruneError("cost model: an operation spreads channels over positions (e.g. a pixel shuffle); "
                              "this architecture is not supported (see docs/PRUNING.md)")
    channels = nan_channels.sum(1).cpu().numpy()
    return channels * per_channel.shape[2], channels


def counted_modules(model: nn.Module) -> set[str]:
    """Names of the modules the counter prices: exact type in its table and no priced ancestor (it does not
    descend into a priced module)."""
    priced = [name for name, m in model.named_modules() if type(m) in op_counter.MODULES_MAPPING]

    def inside(name: str, ancestor: str) -> bool:
        return name != ancestor and (ancestor == "" or name.startswith(ancestor + "."))

    return {name for name in priced if not any(inside(name, other) for other in priced)}


def call_width(call: LayerCall, quantity: str, full: int, sizes: np.ndarray) -> Affine:
    """The width `quantity` of this call in the pruned network, from its unpruned value `full`."""
    removed = call.removed[quantity]
    slope, uneven = np.divmod(removed, sizes)
    if uneven.any():
        g = int(np.flatnonzero(uneven)[0])
        raise GraphpruneError(
            f"cost model: the channels of group {g} reach {call.name} unevenly ({int(removed[g])} {quantity} for "
            f"{int(sizes[g])} channels); this architecture is not supported (see docs/PRUNING.md)"
        )
    return Affine(int(full - slope @ sizes), slope)


def conv_widths(call: LayerCall, sizes: np.ndarray) -> tuple[Affine, Affine, str]:
    """(in channels, out channels, kind) of a conv call; kind is "dense", "depthwise" or "grouped"."""
    conv = call.module
    in_channels = call_width(call, "in_channels", conv.in_channels, sizes)
    out_channels = call_width(call, "out_channels", conv.out_channels, sizes)
    if conv.groups == 1:
        return in_channels, out_channels, "dense"
    if conv.groups == conv.in_channels == conv.out_channels:
        return in_channels, out_channels, "depthwise"  # Torch-Pruning keeps groups == channels when pruning
    if not (in_channels.is_constant and out_channels.is_constant):
        raise GraphpruneError(f"cost model: grouped conv {call.name} (groups={conv.groups}) is pruned; "
                              "pruning.py should have excluded its groups")
    return in_channels, out_channels, "grouped"
