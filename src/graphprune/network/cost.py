"""Resource cost of a mask: analytic FLOPs and parameters of the physically pruned network, budgets, latency.

`CostModel` traces a model once and then prices any kept-channel count per group in microseconds, with the
exact numbers Torch-Pruning's counter reports on `prune_model(...)` output. `measure_latency` times real
networks. This module never prunes, copies or trains a model, and knows nothing of agents or graphs.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch_pruning.utils import op_counter

from graphprune.errors import GraphpruneError
from graphprune.network.budget import METRICS, Budget, parse_target  # noqa: F401 (re-exported)
from graphprune.network.evaluate import evaluation_mode
from graphprune.network.pruning import ChannelGroups, Mask
from graphprune.network.root_channels import member_channels

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Layers whose parameter shapes follow the channels they read and write; every other parameter keeps its
# size, because ChannelGroups excludes any group that touches a parametrised layer of another kind.
_CHANNEL_LAYER_TYPES = (*_CONV_TYPES, nn.Linear, *_BN_TYPES)
# The trace marks pruned channels with NaN; these layers mix channels, so they read the marks and then see
# zeros (a NaN input channel would otherwise spoil every output channel).
_CHANNEL_MIXING_TYPES = (*_CONV_TYPES, nn.Linear)
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
class _Affine:
    """An integer width of the pruned network as a function of the kept counts: `base + slope @ counts`.

    slope: [G] int64, how many channels/elements of this width each kept channel of group g contributes.
    """

    base: int
    slope: np.ndarray

    @classmethod
    def constant(cls, value: int, num_groups: int) -> _Affine:
        return cls(int(value), np.zeros(num_groups, dtype=np.int64))

    @property
    def is_constant(self) -> bool:
        return not self.slope.any()


class _QuadraticForm:
    """`constant + linear @ c + c @ quadratic @ c` in exact int64: every FLOPs/params term is a product of
    at most two widths that depend on the counts (in x out channels), so the total is quadratic in them."""

    def __init__(self, num_groups: int):
        self.constant = 0
        self.linear = np.zeros(num_groups, dtype=np.int64)
        self.quadratic = np.zeros((num_groups, num_groups), dtype=np.int64)

    def add(self, coefficient: int, first: _Affine, second: _Affine | None = None) -> None:
        """Add `coefficient * first * second` (`second` omitted: `coefficient * first`)."""
        if second is None:
            self.constant += coefficient * first.base
            self.linear += coefficient * first.slope
            return
        self.constant += coefficient * first.base * second.base
        self.linear += coefficient * (first.base * second.slope + second.base * first.slope)
        self.quadratic += coefficient * np.outer(first.slope, second.slope)

    def __call__(self, counts: np.ndarray) -> int:
        return int(self.constant + self.linear @ counts + counts @ (self.quadratic @ counts))


@dataclass
class _LayerCall:
    """One traced call of a counted or channel-parametrised layer, widths of one sample of the unpruned net.

    removed[quantity]: [G] how much of the quantity ("in_elements", "out_elements", "in_channels",
    "out_channels") disappears when group g is pruned entirely (all of its channels NaN-marked).
    """

    name: str
    module: nn.Module
    in_shape: tuple[int, ...]  # without the batch dimension, e.g. [C, H, W]
    out_shape: tuple[int, ...]
    removed: dict[str, np.ndarray]


class CostModel:
    """FLOPs and parameters of `prune_model(model, groups, mask)` as a function of kept channels per group.

    **FLOPs** means exactly what `torch_pruning.utils.count_ops_and_params(model, example_inputs)` counts for
    one sample (batch 1) at `groups.input_shape`, on modules of the exact types in its table: multiply-
    accumulates of conv and linear layers plus one per bias output (linear: one per output feature, not per
    position), 2 per input element of affine batch/group/instance/layer norms (1 if not affine), one per
    output element of ReLU/ReLU6/PReLU/ELU/LeakyReLU/GELU modules and of upsampling, one per input element of
    pooling modules, and nothing for anything else (SiLU, Hardswish, Sigmoid modules, functional ops, adds,
    concatenation). **Params** is the number of parameters of the pruned model. Both equal the counter's
    numbers exactly (tests/test_cost.py checks the model zoo and nine torchvision CNNs).

    Construction traces the model once (eval mode, no grad) with each group's channels marked NaN in its own
    batch sample, which measures how every layer's widths depend on each group, including depthwise convs,
    concatenation, squeeze-excite and flatten-into-linear expansions; the costs are then stored as quadratic
    forms in the counts, so a call is a few small integer matrix products. Within a group channels are
    symmetric for cost, so counts suffice. Raises GraphpruneError for layer types it cannot price.
    """

    def __init__(self, model: nn.Module, groups: ChannelGroups):
        self.groups = groups
        self.num_groups = len(groups)
        self._sizes = np.asarray(groups.sizes, dtype=np.int64)
        calls = _trace_layer_calls(model, groups)
        self._flops = _flops_form(model, calls, self._sizes)
        self._params = _params_form(model, calls, self._sizes)
        self.min_counts: tuple[int, ...] = tuple(min(groups.min_channels, size) for size in groups.sizes)
        self.full_flops = self.flops(groups.sizes)
        self.full_params = self.params(groups.sizes)
        self.latency: Any = None  # a latency.LatencyModel, set by `with_latency` for latency budgets

    def _counts(self, counts: Sequence[int] | np.ndarray) -> np.ndarray:
        vector = np.asarray(counts, dtype=np.int64)
        if vector.shape != (self.num_groups,):
            raise ValueError(f"expected {self.num_groups} kept counts (one per group), got shape {vector.shape}")
        return vector

    def flops(self, counts: Sequence[int] | np.ndarray) -> int:
        """FLOPs of the pruned network keeping `counts[g]` channels of group g (see the class docstring)."""
        return self._flops(self._counts(counts))

    def params(self, counts: Sequence[int] | np.ndarray) -> int:
        """Parameters of the pruned network keeping `counts[g]` channels of group g."""
        return self._params(self._counts(counts))

    def with_latency(self, latency: Any) -> CostModel:
        """Price the `latency` metric with `latency` (a `graphprune.network.latency.LatencyModel` of the same model and
        groups); returns self."""
        if tuple(latency.groups.sizes) != self.groups.sizes:
            raise GraphpruneError("the latency model was built for other channel groups than this cost model")
        self.latency = latency
        return self

    @property
    def priced_metrics(self) -> tuple[str, ...]:
        """The metrics this cost model can price now (latency only with a latency model)."""
        return tuple(name for name in METRICS if name != "latency" or self.latency is not None)

    def amount(self, metric: str, counts: Sequence[int] | np.ndarray) -> float:
        """`metric` (a name in budget.METRICS) of the network pruned to `counts`, in its own unit."""
        if metric == "flops":
            return self.flops(counts)
        if metric == "params":
            return self.params(counts)
        if metric == "latency":
            return self._latency_model().seconds(self._counts(counts))
        raise GraphpruneError(f"unknown cost metric {metric!r}; use one of {', '.join(METRICS)}")

    def full_amount(self, metric: str) -> float:
        """`metric` of the unpruned network (latency: as the tables predict it, so that ratios are 1 there)."""
        if metric == "flops":  # the analytic totals are computed once, in __init__ (ratio is a hot path)
            return self.full_flops
        if metric == "params":
            return self.full_params
        return self.amount(metric, self.groups.sizes)

    def ratio(self, metric: str, counts: Sequence[int] | np.ndarray) -> float:
        """`metric` of the pruned network relative to the unpruned one."""
        if metric == "latency":
            return self._latency_model().ratio(self._counts(counts))
        return self.amount(metric, counts) / self.full_amount(metric)

    def _latency_model(self) -> Any:
        if self.latency is None:
            raise GraphpruneError("a latency budget needs a latency table of the network on its device "
                                  "(CostModel.with_latency; the pipeline and graphprune.prune build it)")
        return self.latency

    def of_mask(self, mask: Mask) -> tuple[int, int]:
        """(FLOPs, params) of the network pruned by `mask`."""
        self.groups.check(mask)
        counts = self._counts(mask.counts)
        return self._flops(counts), self._params(counts)

    def meets(self, budget: Budget, counts: Sequence[int] | np.ndarray) -> bool:
        return self.ratio(budget.metric, counts) <= budget.ratio

    def check_feasible(self, budget: Budget) -> None:
        """Raise GraphpruneError if even the minimum channels per group exceed `budget`."""
        smallest = self.ratio(budget.metric, self.min_counts)
        if smallest > budget.ratio:
            achievable = math.ceil(smallest * 10_000) / 10_000  # rounded up, so the suggestion is feasible
            raise GraphpruneError(
                f"budget {budget} is impossible: keeping {self.groups.min_channels} channel(s) per group leaves "
                f"{smallest:.6f} of the {budget.metric} (the layers outside any group and the classifier stay "
                f"whole); choose a ratio of at least {achievable:.4f} or lower min_channels"
            )


def _trace_layer_calls(model: nn.Module, groups: ChannelGroups) -> list[_LayerCall]:
    """Run the model with group g's channels NaN-marked in one batch sample; record every relevant layer call.

    NaN spreads along exactly the channels that physical removal deletes (through activations, pools, adds,
    concatenation, flatten, squeeze-excite products), and channel-mixing layers replace it by zeros after
    reading it, so a sample's NaN count in a tensor is what pruning its group entirely removes from it.
    """
    counted = _counted_modules(model)
    modules = dict(model.named_modules())
    recorded = {name for name, m in modules.items() if name in counted or isinstance(m, _CHANNEL_LAYER_TYPES)}
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
    traced: list[_LayerCall] = []
    try:
        with evaluation_mode(model), torch.no_grad():
            for batch in group_batches or [[]]:  # a model without prunable groups still needs its shapes
                sample_of_group.clear()
                sample_of_group.update({g: sample for sample, g in enumerate(batch)})
                batch_calls.clear()
                model(torch.randn(max(1, len(batch)), *groups.input_shape, generator=generator).to(device))
                if not traced:
                    traced = [
                        _LayerCall(name, modules[name], in_shape, out_shape,
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


def _counted_modules(model: nn.Module) -> set[str]:
    """Names of the modules the counter prices: exact type in its table and no priced ancestor (it does not
    descend into a priced module)."""
    priced = [name for name, m in model.named_modules() if type(m) in op_counter.MODULES_MAPPING]

    def inside(name: str, ancestor: str) -> bool:
        return name != ancestor and (ancestor == "" or name.startswith(ancestor + "."))

    return {name for name in priced if not any(inside(name, other) for other in priced)}


def _width(call: _LayerCall, quantity: str, full: int, sizes: np.ndarray) -> _Affine:
    """The width `quantity` of this call in the pruned network, from its unpruned value `full`."""
    removed = call.removed[quantity]
    slope, uneven = np.divmod(removed, sizes)
    if uneven.any():
        g = int(np.flatnonzero(uneven)[0])
        raise GraphpruneError(
            f"cost model: the channels of group {g} reach {call.name} unevenly ({int(removed[g])} {quantity} for "
            f"{int(sizes[g])} channels); this architecture is not supported (see docs/PRUNING.md)"
        )
    return _Affine(int(full - slope @ sizes), slope)


def _conv_widths(call: _LayerCall, sizes: np.ndarray) -> tuple[_Affine, _Affine, str]:
    """(in channels, out channels, kind) of a conv call; kind is "dense", "depthwise" or "grouped"."""
    conv = call.module
    in_channels = _width(call, "in_channels", conv.in_channels, sizes)
    out_channels = _width(call, "out_channels", conv.out_channels, sizes)
    if conv.groups == 1:
        return in_channels, out_channels, "dense"
    if conv.groups == conv.in_channels == conv.out_channels:
        return in_channels, out_channels, "depthwise"  # Torch-Pruning keeps groups == channels when pruning
    if not (in_channels.is_constant and out_channels.is_constant):
        raise GraphpruneError(f"cost model: grouped conv {call.name} (groups={conv.groups}) is pruned; "
                              "pruning.py should have excluded its groups")
    return in_channels, out_channels, "grouped"


def _flops_form(model: nn.Module, calls: list[_LayerCall], sizes: np.ndarray) -> _QuadraticForm:
    """The counter's per-layer formulas (torch_pruning/utils/op_counter.py), with widths as functions of counts."""
    form = _QuadraticForm(len(sizes))
    counted = _counted_modules(model)
    for call in calls:
        if call.name not in counted:
            continue
        module = call.module
        counter = op_counter.MODULES_MAPPING[type(module)]
        in_elements = _width(call, "in_elements", math.prod(call.in_shape), sizes)
        out_elements = _width(call, "out_elements", math.prod(call.out_shape), sizes)
        if counter is op_counter.conv_flops_counter_hook:
            in_channels, out_channels, kind = _conv_widths(call, sizes)
            positions = math.prod(call.out_shape[1:])
            kernel = math.prod(module.kernel_size)
            if kind == "dense":
                form.add(kernel * positions, in_channels, out_channels)
            elif kind == "depthwise":  # in_channels * (out_channels // groups) = out_channels
                form.add(kernel * positions, out_channels)
            else:
                form.add(kernel * positions * module.in_channels * (module.out_channels // module.groups),
                         _Affine.constant(1, len(sizes)))
            if module.bias is not None:
                form.add(positions, out_channels)
        elif counter is op_counter.linear_flops_counter_hook:
            out_features = _width(call, "out_channels", module.out_features, sizes)
            form.add(1, in_elements, out_features)
            if module.bias is not None:
                form.add(1, out_features)
        elif counter is op_counter.bn_flops_counter_hook:
            form.add(2 if module.affine else 1, in_elements)
        elif counter is op_counter.ln_flops_counter_hook:
            form.add(2 if module.elementwise_affine else 1, in_elements)
        elif counter is op_counter.pool_flops_counter_hook:
            form.add(1, in_elements)
        elif counter in (op_counter.relu_flops_counter_hook, op_counter.upsample_flops_counter_hook):
            form.add(1, out_elements)
        # The remaining reproduced counter, empty_flops_counter_hook, adds nothing; the trace refused others.
    return form


def _params_form(model: nn.Module, calls: list[_LayerCall], sizes: np.ndarray) -> _QuadraticForm:
    """Parameters of the pruned model: conv/linear/BN weights follow their traced widths, the rest is fixed."""
    form = _QuadraticForm(len(sizes))
    one = _Affine.constant(1, len(sizes))
    first_call = {}
    for call in calls:
        first_call.setdefault(call.name, call)
    seen: set[int] = set()
    for name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            call = first_call.get(name)
            if call is None or not isinstance(module, _CHANNEL_LAYER_TYPES) or param_name not in ("weight", "bias"):
                form.add(param.numel(), one)  # never run, or of a kind whose groups pruning.py excludes
                continue
            if isinstance(module, _BN_TYPES):
                form.add(1, _width(call, "out_channels", module.num_features, sizes))
            elif isinstance(module, nn.Linear):
                out_features = _width(call, "out_channels", module.out_features, sizes)
                if param_name == "bias":
                    form.add(1, out_features)
                else:
                    form.add(1, out_features, _width(call, "in_channels", module.in_features, sizes))
            else:
                in_channels, out_channels, kind = _conv_widths(call, sizes)
                kernel = math.prod(module.kernel_size)
                if param_name == "bias":
                    form.add(1, out_channels)
                elif kind == "dense":
                    form.add(kernel, in_channels, out_channels)
                elif kind == "depthwise":
                    form.add(kernel, out_channels)
                else:
                    form.add(param.numel(), one)
    return form


def measure_latency(
    model: nn.Module,
    reference: nn.Module,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 64),
    device: str | torch.device = "cpu",
    warmup: int = 3,
    repeats: int = 20,
) -> dict[int, dict[str, float]]:
    """Median forward time of `model` and `reference` (both already on `device`), measured in one run.

    Runs are interleaved (and their order alternated) so that clock or load drift hits both models alike.
    input_shape: one sample, e.g. (3, 32, 32). Returns, per batch size,
    `{"model_s": median seconds, "reference_s": median seconds, "ratio": model_s / reference_s}`.
    Both models run in eval mode without autograd; their training flags are restored afterwards.
    """
    device = torch.device(device)
    if warmup < 0 or repeats < 1:
        raise GraphpruneError(f"latency needs warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    for label, net in (("model", model), ("reference", reference)):
        if any(p.device.type != device.type for p in net.parameters()):
            raise GraphpruneError(f"the {label} is not on {device}; move it there (.to('{device}')) first")
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def seconds(net: nn.Module, x: torch.Tensor) -> float:
        synchronize()
        start = time.perf_counter()
        net(x)
        synchronize()
        return time.perf_counter() - start

    results: dict[int, dict[str, float]] = {}
    with evaluation_mode(model, reference), torch.no_grad():
        for batch in batch_sizes:
            x = torch.randn(batch, *input_shape, device=device)
            for _ in range(warmup):
                seconds(model, x)
                seconds(reference, x)
            times: dict[str, list[float]] = {"model": [], "reference": []}
            for repeat in range(repeats):
                order = (("model", model), ("reference", reference))
                for label, net in order if repeat % 2 == 0 else order[::-1]:
                    times[label].append(seconds(net, x))
            model_s, reference_s = statistics.median(times["model"]), statistics.median(times["reference"])
            results[batch] = {"model_s": model_s, "reference_s": reference_s, "ratio": model_s / reference_s}
    return results


def latency_model(model: nn.Module, groups: ChannelGroups, settings: Mapping[str, Any]):
    """The latency table of `model` for a `search.latency` section (timed once, then read from its cache)."""
    from graphprune.network.latency import LatencyModel

    return LatencyModel(model, groups, settings["batch_size"], settings["device"], grid=settings["grid"],
                        cache_dir=settings["cache_dir"])
