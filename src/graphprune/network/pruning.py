"""Channel groups, masks, masked forward and physical removal.

A *channel group* is one pruning decision: channels tied together by residual adds, depthwise convs or
concatenation (found by Torch-Pruning's DependencyGraph). A `Mask` keeps a sorted set of channel indices per
group. Two ways to apply it live here, and a third in `graphprune.network.sliced`; all must agree exactly
(tested):
- `ChannelMasker`: forward hooks that zero the pruned channels in place (no copy);
- `prune_model`: a physically smaller, ordinary `nn.Module` (a deep copy pruned with Torch-Pruning);
- `sliced.SlicedNetwork`: the forward on sliced weight tensors (search scoring at the pruned network's cost).
A pruned network is stored as spec + mask + state dict and rebuilt by replaying the mask (`save_pruned`,
`load_pruned`; never a pickled module), and exported with `export_onnx`.
This module knows nothing of costs, graphs or agents.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch_pruning as tp
from torch import nn

from graphprune.atomic import atomic_write
from graphprune.checkpoint import atomic_torch_save, load_checkpoint
from graphprune.errors import GraphpruneError
from graphprune.models import ModelSpec, build_model
from graphprune.network.evaluate import evaluation_mode

# Modules whose output channels a hook can zero so that the result equals removing them. Normalisations that
# mix channels (LayerNorm, GroupNorm) cannot: zeroing a channel changes their statistics, so a group holding
# one is left unprunable (see `ChannelGroups.excluded`).
MASKABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class GroupMember:
    """One module touched by a group: its output (`out`) or input (`in`) channels.

    `channels[j]` lists the module's channel indices that belong to the group's root channel j (usually one
    index; several where a flatten expands one channel into many features).
    """

    module: str
    kind: str  # "out" | "in"
    channels: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ChannelGroup:
    """A set of coupled channels pruned as one decision; indexed by the root layer's output channels."""

    index: int
    root: str  # name of the root module (its output channels index the group)
    size: int
    members: tuple[GroupMember, ...]

    @property
    def out_modules(self) -> tuple[str, ...]:
        return tuple(m.module for m in self.members if m.kind == "out")


@dataclass(frozen=True)
class Mask:
    """Kept channel indices per group (sorted, never empty). Hashable; `key()` is a stable digest."""

    sizes: tuple[int, ...]
    kept: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        if len(self.sizes) != len(self.kept):
            raise ValueError(f"mask has {len(self.kept)} groups but {len(self.sizes)} sizes")
        for g, (size, kept) in enumerate(zip(self.sizes, self.kept, strict=True)):
            if list(kept) != sorted(set(kept)) or (kept and (kept[0] < 0 or kept[-1] >= size)):
                raise ValueError(f"group {g}: kept indices must be sorted, unique and in [0, {size})")

    @classmethod
    def full(cls, sizes: Sequence[int]) -> Mask:
        return cls(tuple(sizes), tuple(tuple(range(s)) for s in sizes))

    @classmethod
    def from_keep_flags(cls, flags: Iterable[Sequence[bool] | torch.Tensor]) -> Mask:
        """Build from one boolean keep vector per group."""
        sizes, kept = [], []
        for f in flags:
            f = torch.as_tensor(f, dtype=torch.bool)
            sizes.append(int(f.numel()))
            kept.append(tuple(int(i) for i in torch.nonzero(f).flatten()))
        return cls(tuple(sizes), tuple(kept))

    def keep_flags(self, group: int) -> torch.Tensor:
        """Boolean keep vector of one group, shape [size]."""
        flags = torch.zeros(self.sizes[group], dtype=torch.bool)
        flags[list(self.kept[group])] = True
        return flags

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(len(k) for k in self.kept)

    def pruned(self, group: int) -> list[int]:
        kept = set(self.kept[group])
        return [i for i in range(self.sizes[group]) if i not in kept]

    def key(self) -> str:
        return hashlib.sha1(json.dumps([self.sizes, self.kept]).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"sizes": list(self.sizes), "kept": [list(k) for k in self.kept]}

    @classmethod
    def from_dict(cls, data: dict) -> Mask:
        return cls(tuple(int(s) for s in data["sizes"]), tuple(tuple(int(i) for i in k) for k in data["kept"]))


class ChannelGroups:
    """The prunable channel groups of one model, found by tracing it once at `input_shape`.

    The classifier (the last conv/linear layer run, whose outputs are the logits) is never pruned.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int], min_channels: int = 1):
        if min_channels < 1:
            raise GraphpruneError(f"min_channels must be at least 1, got {min_channels}")
        self.input_shape = tuple(input_shape)
        self.min_channels = min_channels
        graph = build_dependency_graph(model, self.input_shape)
        classifier = _last_layer_run(model, self.input_shape)
        module_names = {m: n for n, m in model.named_modules()}
        self.groups: list[ChannelGroup] = []
        self.excluded: list[tuple[str, str]] = []  # (root module, why it is not prunable)
        for tp_group in graph.get_all_groups(ignored_layers=[classifier]):
            root = module_names[tp_group[0].dep.target.module]
            reason = _unmaskable_reason(tp_group, module_names)
            if reason:
                self.excluded.append((root, reason))
                continue
            members = _members(tp_group, module_names)
            size = len(tp_group[0].idxs)
            self.groups.append(ChannelGroup(len(self.groups), root, size, members))
        self.classifier = module_names[classifier]

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(g.size for g in self.groups)

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(g.root for g in self.groups)

    def full_mask(self) -> Mask:
        return Mask.full(self.sizes)

    def check(self, mask: Mask) -> None:
        """Raise GraphpruneError unless `mask` fits these groups and keeps `min_channels` in each."""
        if mask.sizes != self.sizes:
            raise GraphpruneError(
                f"mask does not fit this model: group sizes {list(mask.sizes)} != {list(self.sizes)}"
            )
        for group, count in zip(self.groups, mask.counts, strict=True):
            if count < min(self.min_channels, group.size):
                raise GraphpruneError(
                    f"mask keeps {count} channels of group {group.index} ({group.root}); "
                    f"at least {self.min_channels} must stay"
                )

    def summary(self) -> dict:
        return {
            "groups": len(self.groups),
            "channels": sum(self.sizes),
            "sizes": list(self.sizes),
            "roots": list(self.roots),
            "excluded": [{"root": r, "reason": why} for r, why in self.excluded],
            "classifier": self.classifier,
        }


def build_dependency_graph(model: nn.Module, input_shape: Sequence[int]) -> tp.DependencyGraph:
    """Trace `model` with one example input; an untraceable model is a user error naming the failure."""
    try:
        with evaluation_mode(model), torch.enable_grad():  # Torch-Pruning traces through autograd
            example = torch.zeros(1, *input_shape, device=_device_of(model))
            return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception as exc:  # Torch-Pruning raises many types while tracing
        raise GraphpruneError(
            f"cannot trace {type(model).__name__} for channel dependencies "
            f"({type(exc).__name__}: {exc}); see docs/PRUNING.md for models known not to trace"
        ) from exc


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _last_layer_run(model: nn.Module, input_shape: Sequence[int]) -> nn.Module:
    """The last conv/linear executed in a forward pass: it produces the logits."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    ]
    try:
        with evaluation_mode(model), torch.no_grad():
            model(torch.zeros(1, *input_shape, device=_device_of(model)))
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise GraphpruneError(f"{type(model).__name__} has no conv or linear layer to prune")
    return order[-1]


def _unmaskable_reason(tp_group, module_names: dict) -> str | None:
    for item in tp_group.items:
        target = item.dep.target.module
        if isinstance(target, nn.Parameter):
            return "couples an unwrapped nn.Parameter (e.g. a layer scale)"
        writes_channels = _is_out_handler(item.dep.handler) and target in module_names and _has_own_params(target)
        if writes_channels and not isinstance(target, MASKABLE_TYPES):
            return f"couples {type(target).__name__} ({module_names[target]}), which mixes channels"
        if isinstance(target, nn.Conv2d | nn.Conv1d | nn.Conv3d) and 1 < target.groups < target.out_channels:
            # Removing arbitrary channels would break the equal-width groups of a grouped (not depthwise) conv.
            return f"couples grouped conv {module_names[target]} (groups={target.groups})"
    return None


def _is_out_handler(handler) -> bool:
    return getattr(handler, "__name__", "") == "prune_out_channels"


def _has_own_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _members(tp_group, module_names: dict) -> tuple[GroupMember, ...]:
    """Real modules (not traced ops) the group touches, with each root channel's indices in them."""
    merged: dict[tuple[str, str], dict[int, list[int]]] = {}
    for item in tp_group.items:
        module = item.dep.target.module
        if module not in module_names or not _has_own_params(module):
            continue  # traced elementwise ops, activations, pools: nothing to prune
        kind = "out" if _is_out_handler(item.dep.handler) else "in"
        per_root = merged.setdefault((module_names[module], kind), {})
        for idx, root_idx in zip(item.idxs, item.root_idxs, strict=True):
            per_root.setdefault(int(root_idx), []).append(int(idx))
    size = len(tp_group[0].idxs)
    return tuple(
        GroupMember(name, kind, tuple(tuple(sorted(per_root.get(j, []))) for j in range(size)))
        for (name, kind), per_root in merged.items()
    )


class ChannelMasker:
    """Zeroes pruned channels with forward hooks on the model itself (no copy).

    Output equals the physically pruned network's, because every module writing a group's channels (conv,
    linear, batch norm) has its pruned outputs zeroed, and zeros flow through the ops in between (ReLU, pools,
    adds, concatenation) as absent channels would. Use `set(mask)` to switch masks cheaply and `remove()` (or
    the context manager) to restore the model.
    """

    def __init__(self, model: nn.Module, groups: ChannelGroups, mask: Mask | None = None):
        self.model = model
        self.groups = groups
        self._multipliers: dict[str, torch.Tensor] = {}
        self._channel_dim: dict[str, int] = {}
        modules = dict(model.named_modules())
        for group in groups.groups:
            for member in group.members:
                if member.kind != "out" or member.module in self._multipliers:
                    continue
                module = modules[member.module]
                width = module.weight.shape[0] if not isinstance(module, nn.Linear) else module.out_features
                self._multipliers[member.module] = torch.ones(width, device=module.weight.device)
                self._channel_dim[member.module] = -1 if isinstance(module, nn.Linear) else 1
        self._hooks = [modules[name].register_forward_hook(self._hook(name)) for name in self._multipliers]
        self.set(mask if mask is not None else groups.full_mask())

    def _hook(self, name: str):
        multiplier, dim = self._multipliers[name], self._channel_dim[name]

        def zero_pruned(_module, _inputs, output):
            shape = [1] * output.dim()
            shape[dim] = -1
            return output * multiplier.view(shape).to(output.dtype)

        return zero_pruned

    def set(self, mask: Mask) -> None:
        """Apply `mask` (in place: the multipliers are updated, the hooks stay)."""
        self.groups.check(mask)
        for multiplier in self._multipliers.values():
            multiplier.fill_(1.0)
        for group in self.groups.groups:
            pruned = mask.pruned(group.index)
            if not pruned:
                continue
            for member in group.members:
                if member.kind == "out":
                    idx = [i for j in pruned for i in member.channels[j]]
                    self._multipliers[member.module][idx] = 0.0
        self.mask = mask

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def __enter__(self) -> ChannelMasker:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def prune_model(model: nn.Module, groups: ChannelGroups, mask: Mask) -> nn.Module:
    """A physically pruned deep copy of `model`: an ordinary, smaller `nn.Module`. `model` is untouched."""
    groups.check(mask)
    pruned = copy.deepcopy(model)
    graph = build_dependency_graph(pruned, groups.input_shape)
    modules = dict(pruned.named_modules())
    for group in groups.groups:
        idxs = mask.pruned(group.index)
        if not idxs:
            continue
        root = modules[group.root]
        pruner = graph.get_pruner_of_module(root)
        # Indices refer to the root's own output channels, which other groups never touch, so pruning group
        # by group is exact; Torch-Pruning re-derives concat/split offsets before building each group.
        graph.get_pruning_group(root, pruner.prune_out_channels, idxs=idxs).prune(record_history=False)
    return pruned


# Samples of the random batch on which the masked and the pruned network must agree.
AGREEMENT_BATCH = 8


def masked_vs_pruned_difference(model: nn.Module, pruned: Callable[[torch.Tensor], torch.Tensor],
                                groups: ChannelGroups, mask: Mask, seed: int) -> float:
    """Largest |masked(x) - pruned(x)| over a random batch (`pruned`: the pruned network, or any function
    standing for it): 0 up to float rounding when pruning is exact."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(AGREEMENT_BATCH, *groups.input_shape, generator=generator).to(_device_of(model))
    with torch.no_grad():
        with ChannelMasker(model, groups, mask):
            masked = model(x)
        return float((masked - pruned(x)).abs().max())


# ---------------------------------------------------------------------------------------------------------
# Pruned networks and masks on disk. A pruned network is stored as the baseline's spec + the mask + the pruned
# state dict, and rebuilt by replaying the mask on a fresh model: loading never unpickles a module, so a file
# from a shared remote cannot run code.


class PrunedModel(NamedTuple):
    """A physically pruned network rebuilt by `load_pruned`, with what it was built from."""

    model: nn.Module
    spec: ModelSpec | None  # None: a user-defined architecture
    mask: Mask
    meta: dict


def save_pruned(
    path: str | Path, spec: ModelSpec | None, mask: Mask, model: nn.Module, meta: Mapping[str, Any],
    groups: ChannelGroups | None = None,
) -> None:
    """Write a physically pruned `model` (the result of `prune_model(baseline, groups, mask)`, possibly
    fine-tuned) so that `load_pruned` can rebuild it. `groups` are the baseline's channel groups; without
    them they are found again by tracing a fresh model of `spec`. `spec` None: a user-defined architecture,
    which `load_pruned` rebuilds from an unpruned instance the caller passes (groups are then required).
    """
    if groups is None:
        if spec is None:
            raise ValueError("save_pruned needs the baseline's channel groups when there is no model spec")
        groups = ChannelGroups(_fresh_model(spec), spec.input_shape)
    groups.check(mask)
    _check_is_pruned_by(model, groups, mask)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    atomic_torch_save({
        "arch": spec.to_dict() if spec is not None else None,
        "input_shape": list(groups.input_shape),
        "mask": mask.to_dict(),
        "group_roots": list(groups.roots),
        "min_channels": groups.min_channels,
        "state_dict": state,
        "meta": dict(meta),
    }, path)


def load_pruned(path: str | Path, model: nn.Module | None = None) -> PrunedModel:
    """Rebuild a `save_pruned` file on the CPU, in eval mode; any mismatch is a GraphpruneError naming it.

    model: an unpruned instance of the architecture (required when the file holds no spec, i.e. a
    user-defined network; its weights are replaced by the stored ones and it is left unchanged)."""
    data = load_checkpoint(path)
    missing = {"arch", "mask", "group_roots", "min_channels", "state_dict"} - data.keys()
    if missing:
        raise GraphpruneError(
            f"{path} is not a pruned-model file (missing {', '.join(sorted(missing))}); "
            "write it with `graphprune prune` or save_pruned"
        )
    spec = ModelSpec.from_dict(data["arch"]) if data["arch"] is not None else None
    if model is None:
        if spec is None:
            raise GraphpruneError(f"{path} holds a pruned user-defined network: pass an unpruned instance of its "
                                  "architecture, e.g. graphprune.load(path, model=MyNet())")
        model = _fresh_model(spec)
    model = model.cpu()
    input_shape = data.get("input_shape") or spec.input_shape
    groups = ChannelGroups(model, input_shape, int(data["min_channels"]))
    _check_roots(path, groups, data["group_roots"])
    mask = _mask_from_file(path, data["mask"], groups)
    pruned = prune_model(model, groups, mask)
    try:
        pruned.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise GraphpruneError(
            f"the weights in {path} do not fit {spec.name if spec else type(model).__name__} pruned by its mask "
            f"({exc}); the file is damaged, was written by another version, or the model is another architecture"
        ) from exc
    return PrunedModel(pruned.eval(), spec, mask, dict(data.get("meta", {})))


def save_mask(path: str | Path, mask: Mask, groups: ChannelGroups) -> None:
    """Write `mask.pt`: a plain dict of group sizes, kept channel indices and group roots."""
    groups.check(mask)
    atomic_torch_save({**mask.to_dict(), "group_roots": list(groups.roots)}, path)


def load_mask(path: str | Path, groups: ChannelGroups) -> Mask:
    """Read a `save_mask` file and check that it was made for `groups` (same roots, sizes, minimum)."""
    data = load_checkpoint(path)
    missing = {"sizes", "kept", "group_roots"} - data.keys()
    if missing:
        raise GraphpruneError(f"{path} is not a mask file (missing {', '.join(sorted(missing))})")
    _check_roots(path, groups, data["group_roots"])
    return _mask_from_file(path, data, groups)


def _fresh_model(spec: ModelSpec) -> nn.Module:
    # The architecture only: weights come from the stored state dict, so a weights file need not exist here.
    return build_model(dataclasses.replace(spec, weights=None))


def _check_roots(path: str | Path, groups: ChannelGroups, stored_roots: Sequence[str]) -> None:
    if list(stored_roots) != list(groups.roots):
        raise GraphpruneError(
            f"{path} was made for other channel groups than this model has ({len(stored_roots)} stored, "
            f"{len(groups)} found; first difference at group "
            f"{_first_difference(list(stored_roots), list(groups.roots))}); the model or Torch-Pruning "
            "changed since it was written: rerun the stage that wrote it"
        )


def _first_difference(a: list, b: list) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _mask_from_file(path: str | Path, mask_data: dict, groups: ChannelGroups) -> Mask:
    try:
        mask = Mask.from_dict(mask_data)
    except (KeyError, TypeError, ValueError) as exc:
        raise GraphpruneError(f"{path} holds an invalid mask ({exc}); rerun the stage that wrote it") from exc
    try:
        groups.check(mask)
    except GraphpruneError as exc:
        raise GraphpruneError(f"{path}: {exc}") from exc
    return mask


def _check_is_pruned_by(model: nn.Module, groups: ChannelGroups, mask: Mask) -> None:
    """Catch the easy mistake of saving the unpruned model: each root's output width must equal its count."""
    modules = dict(model.named_modules())
    for group, count in zip(groups.groups, mask.counts, strict=True):
        root = modules.get(group.root)
        width = None if root is None else root.weight.shape[0]
        if width != count:
            raise GraphpruneError(
                f"the model to save is not pruned by this mask: {group.root} has {width} output channels, "
                f"the mask keeps {count}; pass prune_model(model, groups, mask)"
            )


def export_onnx(model: nn.Module, input_shape: Sequence[int], path: str | Path) -> str:
    """Export `model` (eval mode, batch dimension dynamic) to ONNX and check the file with `onnx.checker`.

    Tries the TorchScript exporter first (fast, no extra dependencies), then the torch.export-based one where
    this torch lacks the former or it cannot translate an op (e.g. adaptive pooling to a size that does not
    divide the input). Returns the exporter that wrote the file: "torchscript" or "dynamo".
    """
    example = (torch.zeros(1, *input_shape, device=_device_of(model)),)
    with evaluation_mode(model):
        exporter, onnx_bytes = _export_to_bytes(model, example)
    atomic_write(path, lambda stream: stream.write(onnx_bytes))
    import onnx  # only exporting needs it; importing it would slow down every other user of this module

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise GraphpruneError(f"the ONNX file {path} fails onnx.checker: {exc}") from exc
    return exporter


def _export_to_bytes(model: nn.Module, example: tuple[torch.Tensor, ...]) -> tuple[str, bytes]:
    names = {"input_names": ["input"], "output_names": ["logits"]}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), _silenced_stdout():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter announces retirement
            torch.onnx.export(model, example, buffer, dynamo=False, **names,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        return "torchscript", buffer.getvalue()
    except Exception as legacy_exc:  # both exporters raise many types on ops they cannot translate
        try:
            program = torch.onnx.export(model, example, dynamo=True, verbose=False, **names,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
        except Exception as dynamo_exc:
            raise GraphpruneError(
                f"cannot export {type(model).__name__} to ONNX: the TorchScript exporter failed "
                f"({type(legacy_exc).__name__}: {_first_line(legacy_exc)}) and so did the dynamo exporter "
                f"({type(dynamo_exc).__name__}: {_first_line(dynamo_exc)})"
            ) from dynamo_exc
        return "dynamo", program.model_proto.SerializeToString()


@contextlib.contextmanager
def _silenced_stdout():
    """Hide C-level stdout: a failing TorchScript export prints its whole graph there (the exception keeps the
    cause, and the dynamo exporter is tried next)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]
