"""The one training loop: SGD with momentum, per-epoch LR schedule, checkpoint and resume after every epoch.

Used to pretrain baselines and to fine-tune pruned networks, so it takes any `nn.Module` and datasets. It
never reads the test split: the per-epoch check is on the search split. Resuming is exact on the CPU because
every epoch reseeds all RNGs from (seed, epoch), so nothing depends on RNG state carried across epochs.
"""

from __future__ import annotations

import csv
import io
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from graphprune.checkpoint import atomic_torch_save, atomic_write_text, load_checkpoint
from graphprune.data.splits import make_loader
from graphprune.errors import GraphpruneError
from graphprune.network.evaluate import evaluate
from graphprune.paths import training_checkpoint, training_history
from graphprune.recipe import TrainRecipe as TrainRecipe  # defined without torch, for the config code

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochRecord:
    """One row of history.csv; `epoch` counts from 1, accuracies are fractions."""

    epoch: int
    lr: float
    train_loss: float
    train_top1: float
    search_loss: float
    search_top1: float
    seconds: float


HISTORY_COLUMNS = [field.name for field in fields(EpochRecord)]


@dataclass
class TrainResult:
    model: nn.Module
    history: list[EpochRecord]
    resumed_from_epoch: int  # epochs already done when this call started (0 = fresh start)

    @property
    def seconds(self) -> float:
        """Training time summed over all epochs, including those run before a resume."""
        return sum(record.seconds for record in self.history)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GraphpruneError("device 'cuda' requested but no CUDA device is available; use cpu or auto")
    if name not in ("cpu", "cuda"):
        raise GraphpruneError(f"unknown device '{name}'; use auto, cpu or cuda")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def train(
    model: nn.Module,
    recipe: TrainRecipe,
    train_set: Dataset,
    search_set: Dataset,
    *,
    run_dir: str | Path,
    seed: int,
    config_hash: str,
    device: torch.device,
    metadata: Mapping[str, Any] | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train `model` in place for `recipe.epochs`, resuming from `run_dir/last.pt` when it was written
    for the same `config_hash` (else starting over), and writing `run_dir/{last.pt, history.csv}` after
    every epoch. `metadata` (architecture, dataset, ...) is stored in the checkpoint; `on_epoch_end` runs
    after each checkpoint is written."""
    run_dir = str(run_dir)
    model.to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
        weight_decay=recipe.weight_decay, nesterov=recipe.nesterov,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.lr_factor)
    use_amp = recipe.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    history = _resume(run_dir, config_hash, model, optimizer, scheduler, scaler)
    resumed_from = len(history)

    search_loader = make_loader(search_set, recipe.batch_size, workers=recipe.workers)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    with logging_redirect_tqdm():
        for epoch in range(resumed_from, recipe.epochs):
            started = time.perf_counter()
            seed_everything(epoch_seed(seed, epoch))
            train_loader = make_loader(_epoch_images(train_set, recipe.images_per_epoch, epoch_seed(seed, epoch)),
                                       recipe.batch_size, shuffle=True, seed=epoch_seed(seed, epoch),
                                       workers=recipe.workers)
            lr = optimizer.param_groups[0]["lr"]
            train_loss, train_top1 = _train_one_epoch(
                model, train_loader, optimizer, scaler, criterion, device, use_amp,
                description=f"epoch {epoch + 1}/{recipe.epochs}",
            )
            scheduler.step()
            search = evaluate(model, search_loader, device)
            record = EpochRecord(
                epoch + 1, lr, train_loss, train_top1, search["loss"], search["top1"],
                time.perf_counter() - started,
            )
            history.append(record)
            _save_state(run_dir, model, optimizer, scheduler, scaler, history, config_hash, metadata)
            log.info(
                "epoch %d/%d lr %.4g train loss %.4f top1 %.4f search loss %.4f top1 %.4f (%.1f s)",
                record.epoch, recipe.epochs, lr, train_loss, train_top1, record.search_loss,
                record.search_top1, record.seconds,
            )
            if on_epoch_end is not None:
                on_epoch_end(record)
    return TrainResult(model, history, resumed_from)


def _epoch_images(train_set: Dataset, images: int | None, seed: int) -> Dataset:
    """The training images of one epoch: all of them, or `images` drawn without replacement by `seed`."""
    if images is None or images >= len(train_set):
        return train_set
    return Subset(train_set, torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:images].tolist())


def _train_one_epoch(model, loader, optimizer, scaler, criterion, device, use_amp, description):
    """One pass over `loader`; returns (mean loss, top-1 fraction) of the training batches."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    progress = tqdm(loader, desc=description, leave=False, disable=None, unit="batch")
    for step, (images, labels) in enumerate(progress):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=use_amp):
            logits = model(images)  # [B, classes]
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss.detach() * labels.numel()
        correct += (logits.argmax(dim=1) == labels).sum()
        count += labels.numel()
        if step % 20 == 0:  # .item() synchronises the GPU, so refresh the bar only now and then
            progress.set_postfix(loss=f"{loss_sum.item() / count:.3f}", acc=f"{correct.item() / count:.3f}")
    return loss_sum.item() / max(count, 1), correct.item() / max(count, 1)


def _resume(run_dir, config_hash, model, optimizer, scheduler, scaler) -> list[EpochRecord]:
    """Load `last.pt` into the training objects when it belongs to this config; returns the history so far."""
    path = training_checkpoint(run_dir)
    if not Path(path).exists():
        return []
    state = load_checkpoint(path)
    stored_hash = state.get("meta", {}).get("config_hash")
    if stored_hash != config_hash:
        log.warning(
            "%s was written for config %s, this run is %s: starting over", path, stored_hash, config_hash
        )
        return []
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history = [EpochRecord(**row) for row in state["history"]]
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise GraphpruneError(f"cannot resume from {path} ({exc}); delete it to start over") from exc
    log.info("resuming from %s after epoch %d", path, len(history))
    return history


def _save_state(run_dir, model, optimizer, scheduler, scaler, history, config_hash, metadata) -> None:
    rows = [asdict(record) for record in history]
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": len(history),
        "history": rows,
        "meta": {**(metadata or {}), "config_hash": config_hash, "epoch": len(history), "metrics": rows[-1]},
    }
    atomic_torch_save(state, training_checkpoint(run_dir))
    atomic_write_text(history_csv(history), training_history(run_dir))


def history_csv(history: list[EpochRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(record) for record in history)
    return buffer.getvalue()
