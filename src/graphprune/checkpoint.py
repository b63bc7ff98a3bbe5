"""Atomic writes of result files and safe loading of checkpoints.

Every artifact is written to a temporary file in its own folder and moved into place with `os.replace`, so a
killed job never leaves a half-written file that looks complete. Checkpoints are plain dicts of tensors and
numbers loaded with `weights_only=True`; this module never pickles or unpickles modules.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from graphprune.errors import GraphpruneError
from graphprune.models import ModelSpec, build_model

# mkstemp creates files readable by the owner only; results should get the usual umask-based mode.
_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temp_name, 0o666 & ~_UMASK)
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    _atomic_write(path, lambda stream: torch.save(obj, stream))


def atomic_write_text(text: str, path: str | Path) -> None:
    _atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


def atomic_write_json(data: Any, path: str | Path) -> None:
    atomic_write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", path)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint dict on the CPU; a missing or unreadable file is a GraphpruneError naming it."""
    path = Path(path)
    if not path.is_file():
        raise GraphpruneError(f"checkpoint {path} does not exist; run the stage that writes it first")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or holding pickled objects
        raise GraphpruneError(f"cannot read checkpoint {path} ({exc}); delete it and rerun its stage") from exc
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
