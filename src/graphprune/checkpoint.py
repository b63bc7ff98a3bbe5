"""Atomic writes of torch files and safe loading of checkpoints.

Every artifact is written to a temporary file in its own folder and moved into place with `os.replace`
(`graphprune.atomic`, which also writes text and JSON), so a killed job never leaves a half-written file that
looks complete. Checkpoints are plain dicts of tensors and numbers loaded with `weights_only=True`; this
module never pickles or unpickles modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

# The torch-free writers live in graphprune.atomic; they are re-exported here for existing imports.
from graphprune.atomic import atomic_write as _atomic_write
from graphprune.atomic import atomic_write_json as atomic_write_json
from graphprune.atomic import atomic_write_text as atomic_write_text
from graphprune.errors import GraphpruneError
from graphprune.models import ModelSpec, build_model


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    _atomic_write(path, lambda stream: torch.save(obj, stream))


def load_checkpoint(path: str | Path, remedy: str = "delete it and rerun its stage") -> dict:
    """Load a checkpoint dict on the CPU; a missing or unreadable file is a GraphpruneError naming it (and
    `remedy`: what to do about an unreadable one)."""
    path = Path(path)
    if not path.is_file():
        raise GraphpruneError(f"checkpoint {path} does not exist; run the stage that writes it first")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or holding pickled objects
        raise GraphpruneError(f"cannot read checkpoint {path} ({exc}); {remedy}") from exc
    if not isinstance(data, dict):
        raise GraphpruneError(f"checkpoint {path} holds a {type(data).__name__}, expected a dict")
    return data


@dataclass(frozen=True)
class ModelCheckpoint:
    """A model rebuilt from a checkpoint, with the spec it was built from and free-form metadata."""

    model: nn.Module
    spec: ModelSpec
    meta: dict


def save_model(path: str | Path, model: nn.Module, spec: ModelSpec, meta: Mapping[str, Any]) -> None:
    """Write `{"arch": spec dict, "state_dict": ..., "meta": ...}`: rebuildable without pickled code."""
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    atomic_torch_save({"arch": spec.to_dict(), "state_dict": state, "meta": dict(meta)}, path)


def is_model_file(data: Mapping[str, Any]) -> bool:
    """Whether a loaded checkpoint dict is a `save_model` file (else it may be a user's plain state dict)."""
    return {"arch", "state_dict"} <= data.keys()


def load_state_dict_into(model: nn.Module, state: Mapping[str, Any], source: str) -> nn.Module:
    """`model` with the weights of `state` (a plain state dict, e.g. `torch.save(net.state_dict(), path)`), in
    eval mode. Keys or shapes that do not fit raise a GraphpruneError saying what `model` expected."""
    if not state or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise GraphpruneError(f"{source} is neither a graphprune model file nor a state dict of tensors "
                              "(make one with torch.save(model.state_dict(), path))")
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    given = {name: tuple(t.shape) for name, t in state.items()}
    problems = [f"missing {_some(expected.keys() - given.keys())}" if expected.keys() - given.keys() else "",
                f"unexpected {_some(given.keys() - expected.keys())}" if given.keys() - expected.keys() else "",
                _some(f"{name} {given[name]} (expected {shape})" for name, shape in expected.items()
                      if name in given and given[name] != shape)]
    problems = [p for p in problems if p]
    if problems:
        raise GraphpruneError(f"{source} does not fit the model ({'; '.join(problems)}): check --model, "
                              "--num-classes, --in-channels against the network the weights come from")
    model.load_state_dict(state)
    return model.eval()


def _some(names, shown: int = 4) -> str:
    names = sorted(names)
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def load_model(path: str | Path) -> ModelCheckpoint:
    """Rebuild an unpruned model from a `save_model` file (on the CPU, in eval mode)."""
    data = load_checkpoint(path)
    missing = {"arch", "state_dict"} - data.keys()
    if missing:
        raise GraphpruneError(f"checkpoint {path} is not a model file (missing {', '.join(sorted(missing))})")
    spec = ModelSpec.from_dict(data["arch"])
    model = build_model(spec)
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise GraphpruneError(f"checkpoint {path} does not fit the architecture {spec.name}: {exc}") from exc
    return ModelCheckpoint(model.eval(), spec, data.get("meta", {}))
