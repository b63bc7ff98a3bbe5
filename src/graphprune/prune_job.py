"""The work of `graphprune prune`: the network its options name (a zoo or torchvision model, a graphprune
model.pt or a state dict), the images (`api.load_data`), `api.prune` and `api.finetune`, and the output folder:
model.pt (spec + mask + pruned state dict, see `pruning.save_pruned`), mask.pt, model.onnx (optional) and
metrics.json, written last. The command parses the options into a `PruneJob` and prints the result; the
messages here name the options (--model, --checkpoint, ...), as they are what the user typed.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphprune import api
from graphprune.checkpoint import atomic_write_json, is_model_file, load_checkpoint, load_state_dict_into
from graphprune.config import dataset_settings
from graphprune.data.datasets import dataset_info
from graphprune.errors import GraphpruneError
from graphprune.models import ModelSpec, build_model
from graphprune.network.pruning import export_onnx, save_mask
from graphprune.paths import training_checkpoint
from graphprune.search_setup import parse_request

CHECKPOINT_FORMATS = ("--checkpoint takes a graphprune model.pt or a plain state dict saved with "
                      "torch.save(model.state_dict(), path); pickled modules are never loaded")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneJob:
    """The options of `graphprune prune` (one field per option, same name; see `graphprune prune --help`)."""

    model: str | None
    checkpoint: Path | None
    dataset_shape: str | None  # "C,H,W"
    input_size: int | None
    in_channels: int | None
    num_classes: int | None
    method: str
    target: str
    settings: dict[str, Any]
    data: str | None
    data_root: str
    search_size: float
    search_images: int | None
    evaluations: int
    finetune_epochs: int
    finetune_lr: float | None
    min_channels: int
    seed: int
    device: str
    out: Path
    onnx: bool
    budget_batch_size: int
    latency_cache: str | None
    latency_batch_sizes: tuple[int, ...]
    latency_repeats: int
    latency_threads: int
    keep_checkpoints: bool


def run_prune_job(job: PruneJob) -> tuple[ModelSpec, api.PruneResult]:
    """Prune (and fine-tune) the network `job` names and write its folder; returns its spec and the result.
    A refused job leaves no empty folders behind (a search checkpoint to resume from stays)."""
    existed = job.out.exists()
    try:
        return _run(job)
    except GraphpruneError:
        _remove_empty_folders(job.out, keep_root=existed)
        raise


def _run(job: PruneJob) -> tuple[ModelSpec, api.PruneResult]:
    # Everything a user can get wrong is checked before any loading, tracing or writing.
    parse_request(job.method, job.target, job.settings)
    if job.finetune_epochs and not job.data:
        raise GraphpruneError("--finetune-epochs needs --data (the images to fine-tune on)")
    if job.latency_threads < 1:
        raise GraphpruneError(f"--latency-threads must be at least 1, got {job.latency_threads}")
    spec, stored = model_spec(job)
    data = api.load_data(job.data, spec.in_channels, spec.input_size, num_classes=spec.num_classes,
                         search_size=job.search_size, seed=job.seed, root=job.data_root) if job.data else None
    model = build_network(spec, stored, job.checkpoint, job.seed)
    result = api.prune(
        model, torch.zeros(2, *spec.input_shape), job.target, job.method, data, settings=job.settings,
        evaluations=job.evaluations, seed=job.seed, min_channels=job.min_channels,
        search_images=job.search_images, device=job.device, work_dir=job.out / "search",
        latency_batch_sizes=job.latency_batch_sizes, latency_repeats=job.latency_repeats,
        latency_threads=job.latency_threads, spec=spec,
        latency={"batch_size": job.budget_batch_size, "device": "cuda" if job.device == "cuda" else "cpu",
                 "cache_dir": job.latency_cache},
    )
    if job.finetune_epochs:
        recipe = {"lr": job.finetune_lr} if job.finetune_lr is not None else {}
        api.finetune(result, epochs=job.finetune_epochs, seed=job.seed, device=job.device,
                     run_dir=job.out / "finetune", **recipe)
    write_outputs(result, job.out, checkpoint=job.checkpoint, onnx=job.onnx)
    if not job.keep_checkpoints:  # the resumable fine-tuning state is spent once model.pt is written
        Path(training_checkpoint(str(job.out / "finetune"))).unlink(missing_ok=True)
    return spec, result


def write_outputs(result: api.PruneResult, out: Path, *, checkpoint: Path | None, onnx: bool) -> None:
    """model.pt, mask.pt, optional model.onnx, then metrics.json (last: its presence means the rest is there)."""
    out.mkdir(parents=True, exist_ok=True)
    api.save(result, out / "model.pt")
    save_mask(out / "mask.pt", result.mask, result.groups)
    exporter = export_onnx(result.model, result.groups.input_shape, out / "model.onnx") if onnx else None
    m = result.metrics
    latency_ratio = m.latency[min(m.latency, key=int)]["ratio"] if m.latency else None
    atomic_write_json({
        "model": result.spec.name if result.spec else None, "checkpoint": str(checkpoint) if checkpoint else None,
        **m.to_dict(), "latency_ratio": latency_ratio, "onnx_exporter": exporter, "search": result.record,
    }, out / "metrics.json")


def model_spec(job: PruneJob) -> tuple[ModelSpec, dict | None]:
    """The architecture the options describe, and the loaded --checkpoint (None without one). A graphprune
    model file names its architecture, which the options must not contradict; a plain state dict needs --model."""
    shape = {"in_channels": job.in_channels, "input_size": job.input_size, "num_classes": job.num_classes}
    if job.dataset_shape:
        channels, height, _width = _shape(job.dataset_shape)
        for key, value in (("in_channels", channels), ("input_size", height)):
            if shape[key] is not None and shape[key] != value:
                raise GraphpruneError(f"--dataset-shape {job.dataset_shape} contradicts --{key.replace('_', '-')}")
            shape[key] = value
    stored = None
    if job.checkpoint is not None:
        stored = load_checkpoint(job.checkpoint, remedy=CHECKPOINT_FORMATS)
    if job.data and not job.data.startswith(api.IMAGE_FOLDER_PREFIX) and not (stored and is_model_file(stored)):
        named = dataset_info(dataset_settings({"name": job.data}, source=f"--data {job.data}"))
        for key, value in asdict(named).items():  # a named dataset fixes the shape
            if key in shape and shape[key] is None:
                shape[key] = value
    given = {key: value for key, value in shape.items() if value is not None}
    if stored is not None and is_model_file(stored):
        spec = ModelSpec.from_dict(stored["arch"])
        wanted = {"name": job.model, **given} if job.model else given
        clashes = [f"{key}={value} (checkpoint: {getattr(spec, key)})" for key, value in wanted.items()
                   if getattr(spec, key) != value]
        if clashes:
            raise GraphpruneError(f"{job.checkpoint} holds {spec.name} for another setting: "
                                  f"{', '.join(clashes)}; drop the flags or pick the matching checkpoint")
        return spec, stored
    if not job.model:
        raise GraphpruneError("give --model (a zoo or torchvision:<name> model): --checkpoint " + (
            "holds weights without an architecture" if stored is not None else "is not given either"))
    return ModelSpec(job.model, **given), stored


def build_network(spec: ModelSpec, stored: dict | None, checkpoint: Path | None, seed: int) -> nn.Module:
    """The network to prune: built from `spec`, with the checkpoint's weights `stored`, or fresh weights drawn
    under `seed` (the same command gives the same network, and so the same result)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
    if stored is None:
        log.warning("no --checkpoint: pruning an UNTRAINED %s (fresh weights seeded by --seed %d); its accuracies "
                    "mean little. Give your trained weights with --checkpoint (README: prune your own network)",
                    spec.name, seed)
        return model
    weights = stored["state_dict"] if is_model_file(stored) else stored
    return load_state_dict_into(model, weights, f"--checkpoint {checkpoint}")


def _remove_empty_folders(root: Path, keep_root: bool) -> None:
    """Remove the empty folders under `root` (deepest first), and `root` itself when empty and not `keep_root`;
    files, such as a search checkpoint to resume from, are never touched."""
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not keep_root and not any(root.iterdir()):
        root.rmdir()


def _shape(text: str) -> tuple[int, int, int]:
    try:
        channels, height, width = (int(part) for part in text.split(","))
    except ValueError as exc:
        raise GraphpruneError(f"--dataset-shape must be C,H,W (three integers), got {text!r}") from exc
    if height != width or min(channels, height) < 1:
        raise GraphpruneError(f"--dataset-shape {text}: the models take square inputs (H = W) of positive size")
    return channels, height, width
