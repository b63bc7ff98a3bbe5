"""Accuracy and loss of a classifier on a data split: the one evaluation used by every stage, and the one
batch-norm recalibration (search scoring and fine-tuning both give a pruned network fresh BN statistics).

`evaluate` only measures: no gradients, no parameter changes; the model's train/eval mode is restored
afterwards (`evaluation_mode`, which every module that runs a model for measurement uses).
`recalibrate_batch_norm` changes BN running statistics and nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TypedDict

import torch
from torch import nn
from torch.utils.data import DataLoader

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class EvalMetrics(TypedDict):
    """top1 / top5: fractions in [0, 1] (top5 uses k = min(5, classes)); loss: mean cross-entropy."""

    top1: float
    top5: float
    loss: float


@contextlib.contextmanager
def evaluation_mode(*models: nn.Module) -> Iterator[None]:
    """Switch `models` to eval mode for the block; afterwards (also on an error) each gets back its own
    train/eval mode with `model.train(mode)`, which sets every submodule to it."""
    modes = [model.training for model in models]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for model, mode in zip(models, modes, strict=True):
            model.train(mode)


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str) -> EvalMetrics:
    """Evaluate `model` on batches `(images [B, C, H, W], labels [B])` from `loader`."""
    correct_top1 = correct_topk = 0
    loss_sum, count = 0.0, 0
    with evaluation_mode(model), torch.inference_mode():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            logits = model(images)  # [B, classes]
            loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            k = min(5, logits.shape[1])
            top_classes = logits.topk(k, dim=1).indices  # [B, k], best first
            hits = top_classes == labels[:, None]
            correct_top1 += hits[:, 0].sum().item()
            correct_topk += hits.any(dim=1).sum().item()
            count += labels.numel()
    if count == 0:
        raise ValueError("cannot evaluate on an empty data split")
    return EvalMetrics(top1=correct_top1 / count, top5=correct_topk / count, loss=loss_sum / count)


def recalibrate_batch_norm(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace every BN layer's running statistics by the average of its batch statistics over `batches`
    (`[B, C, H, W]` each, on the model's device; equal-sized batches give the exact mean).

    Pruning (or masking) channels changes what each BN layer sees, so the baseline's statistics no longer
    fit. Only BN layers run in train mode, so dropout and the like stay deterministic; momenta and train/eval
    modes are restored afterwards, so a network trained next updates its statistics as usual.
    """
    for bn in model.modules():
        if isinstance(bn, BN_TYPES):
            bn.reset_running_stats()
    with batch_norm_calibration(model), torch.no_grad():
        for batch in batches:
            model(batch)


@contextlib.contextmanager
def batch_norm_calibration(model: nn.Module) -> Iterator[None]:
    """For the block: every module in eval mode but BN layers, which accumulate a cumulative average of their
    batch statistics (momentum None); modes and momenta are put back afterwards. Resetting the statistics
    first is the caller's part (they may live outside the model: `sliced.SlicedNetwork`)."""
    bns = [m for m in model.modules() if isinstance(m, BN_TYPES)]
    modes = [(m, m.training) for m in model.modules()]
    momenta = [bn.momentum for bn in bns]
    try:
        model.eval()
        for bn in bns:
            bn.momentum = None  # cumulative average: every calibration batch weighs the same
            bn.train()
        yield
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        for module, training in modes:
            module.training = training
