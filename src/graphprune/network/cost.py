"""Resource cost of a mask: analytic FLOPs and parameters of the physically pruned network, and budgets.

`CostModel` traces a model once (`layer_calls.trace_layer_calls`) and then prices any kept-channel count per
group in microseconds, with the exact numbers Torch-Pruning's counter reports on `prune_model(...)` output; a
latency budget is priced by a `latency.LatencyModel` handed to `with_latency` (real networks are timed by
`latency.measure_latency`). This module never prunes, copies or trains a model, and knows nothing of agents or
graphs.
"""

from __future__ import annotations

import functools
import math
import pkgutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import nn
from torch_pruning.utils import op_counter

from graphprune.errors import GraphpruneError
from graphprune.network.budget import METRICS, Budget, parse_target  # noqa: F401 (re-exported)
from graphprune.network.evaluate import BN_TYPES
from graphprune.network.layer_calls import (
    CHANNEL_LAYER_TYPES,
    Affine,
    LayerCall,
    call_width,
    conv_widths,
    counted_modules,
    trace_layer_calls,
)
from graphprune.network.pruning import ChannelGroups, Mask


class _QuadraticForm:
    """`constant + linear @ c + c @ quadratic @ c` in exact int64: every FLOPs/params term is a product of
    at most two widths that depend on the counts (in x out channels), so the total is quadratic in them."""

    def __init__(self, num_groups: int):
        self.constant = 0
        self.linear = np.zeros(num_groups, dtype=np.int64)
        self.quadratic = np.zeros((num_groups, num_groups), dtype=np.int64)

    def add(self, coefficient: int, first: Affine, second: Affine | None = None) -> None:
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
        calls = trace_layer_calls(model, groups)
        self._flops = _flops_form(model, calls, self._sizes)
        self._params = _params_form(model, calls, self._sizes)
        self.min_counts: tuple[int, ...] = tuple(min(groups.min_channels, size) for size in groups.sizes)
        self.full_flops = self.flops(groups.sizes)
        self.full_params = self.params(groups.sizes)
        self.latency: Any = None  # a latency.LatencyModel, set by `with_latency` for latency budgets
        self._full_amounts: dict[str, float] = {"flops": self.full_flops, "params": self.full_params}

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
        """Price the `latency` metric with `latency` (a `graphprune.network.latency.LatencyModel` of the same
        model and groups); returns self."""
        if tuple(latency.groups.sizes) != self.groups.sizes:
            raise GraphpruneError("the latency model was built for other channel groups than this cost model")
        self.latency = latency
        self._full_amounts.pop("latency", None)
        return self

    @property
    def priced_metrics(self) -> tuple[str, ...]:
        """The metrics this cost model can price now (the measured ones, latency, only with their table)."""
        return tuple(name for name, metric in METRICS.items() if not metric.measured or self.latency is not None)

    def amount(self, metric: str, counts: Sequence[int] | np.ndarray) -> float:
        """`metric` (a name in budget.METRICS) of the network pruned to `counts`, in its own unit."""
        return _price(metric)(self, self._counts(counts))

    def full_amount(self, metric: str) -> float:
        """`metric` of the unpruned network (latency: as the tables predict it, so that ratios are 1 there);
        computed once per metric (ratio is a hot path)."""
        if metric not in self._full_amounts:
            self._full_amounts[metric] = self.amount(metric, self.groups.sizes)
        return self._full_amounts[metric]

    def ratio(self, metric: str, counts: Sequence[int] | np.ndarray) -> float:
        """`metric` of the pruned network relative to the unpruned one."""
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


def flops_price(cost: CostModel, counts: np.ndarray) -> float:
    """The `flops` metric's price (budget.METRICS)."""
    return cost._flops(counts)


def params_price(cost: CostModel, counts: np.ndarray) -> float:
    """The `params` metric's price (budget.METRICS)."""
    return cost._params(counts)


def latency_price(cost: CostModel, counts: np.ndarray) -> float:
    """The `latency` metric's price (budget.METRICS): predicted seconds from the cost model's timing tables."""
    return cost._latency_model().seconds(counts)


def _price(metric: str) -> Callable[[CostModel, np.ndarray], float]:
    """The price function `budget.METRICS[metric].price` names."""
    if metric not in METRICS:
        raise GraphpruneError(f"unknown cost metric {metric!r}; use one of {', '.join(METRICS)}")
    return _resolved(METRICS[metric].price)


_resolved = functools.cache(pkgutil.resolve_name)  # "module:function" -> the function, imported once (hot path)


def _flops_form(model: nn.Module, calls: list[LayerCall], sizes: np.ndarray) -> _QuadraticForm:
    """The counter's per-layer formulas (torch_pruning/utils/op_counter.py), with widths as functions of counts."""
    form = _QuadraticForm(len(sizes))
    counted = counted_modules(model)
    for call in calls:
        if call.name not in counted:
            continue
        module = call.module
        counter = op_counter.MODULES_MAPPING[type(module)]
        in_elements = call_width(call, "in_elements", math.prod(call.in_shape), sizes)
        out_elements = call_width(call, "out_elements", math.prod(call.out_shape), sizes)
        if counter is op_counter.conv_flops_counter_hook:
            in_channels, out_channels, kind = conv_widths(call, sizes)
            positions = math.prod(call.out_shape[1:])
            kernel = math.prod(module.kernel_size)
            if kind == "dense":
                form.add(kernel * positions, in_channels, out_channels)
            elif kind == "depthwise":  # in_channels * (out_channels // groups) = out_channels
                form.add(kernel * positions, out_channels)
            else:
                form.add(kernel * positions * module.in_channels * (module.out_channels // module.groups),
                         Affine.constant(1, len(sizes)))
            if module.bias is not None:
                form.add(positions, out_channels)
        elif counter is op_counter.linear_flops_counter_hook:
            out_features = call_width(call, "out_channels", module.out_features, sizes)
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


def _params_form(model: nn.Module, calls: list[LayerCall], sizes: np.ndarray) -> _QuadraticForm:
    """Parameters of the pruned model: conv/linear/BN weights follow their traced widths, the rest is fixed."""
    form = _QuadraticForm(len(sizes))
    one = Affine.constant(1, len(sizes))
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
            if call is None or not isinstance(module, CHANNEL_LAYER_TYPES) or param_name not in ("weight", "bias"):
                form.add(param.numel(), one)  # never run, or of a kind whose groups pruning.py excludes
                continue
            if isinstance(module, BN_TYPES):
                form.add(1, call_width(call, "out_channels", module.num_features, sizes))
            elif isinstance(module, nn.Linear):
                out_features = call_width(call, "out_channels", module.out_features, sizes)
                if param_name == "bias":
                    form.add(1, out_features)
                else:
                    form.add(1, out_features, call_width(call, "in_channels", module.in_features, sizes))
            else:
                in_channels, out_channels, kind = conv_widths(call, sizes)
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
