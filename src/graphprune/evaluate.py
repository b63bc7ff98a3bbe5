"""Accuracy and loss of a classifier on a data split: the one evaluation used by every stage.

It only measures: no gradients, no parameter changes; the model's train/eval mode is restored afterwards.
"""

from __future__ import annotations

from typing import TypedDict

import torch
from torch import nn
from torch.utils.data import DataLoader


class EvalMetrics(TypedDict):
    """top1 / top5: fractions in [0, 1] (top5 uses k = min(5, classes)); loss: mean cross-entropy."""

    top1: float
    top5: float
    loss: float


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str) -> EvalMetrics:
    """Evaluate `model` on batches `(images [B, C, H, W], labels [B])` from `loader`."""
    was_training = model.training
    model.eval()
    correct_top1 = correct_topk = 0
    loss_sum, count = 0.0, 0
    with torch.inference_mode():
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
    model.train(was_training)
    if count == 0:
        raise ValueError("cannot evaluate on an empty data split")
    return EvalMetrics(top1=correct_top1 / count, top5=correct_topk / count, loss=loss_sum / count)
