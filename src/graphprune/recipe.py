"""`TrainRecipe`: the hyper-parameters of one training run, as plain data.

Kept apart from `graphprune.train` (which trains, and so imports torch) so that the config code can build
recipes without importing torch; `graphprune.train` re-exports it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainRecipe:
    """Hyper-parameters of one training run (a `pretrain` or `finetune` config section).

    schedule: "cosine" (to zero over the epochs after warm-up) or "step" (times `gamma` at each milestone
    epoch). warmup_epochs: linear ramp of the LR over the first epochs. amp: mixed precision, CUDA only.
    """

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool
    schedule: str
    milestones: tuple[int, ...]
    gamma: float
    warmup_epochs: int
    label_smoothing: float
    amp: bool
    workers: int
    images_per_epoch: int | None  # train on this many images per epoch, drawn anew each epoch; None = all

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainRecipe:
        """Build from a complete (schema-validated, defaults filled) section; see `config.train_recipe`."""
        return cls(**{**data, "milestones": tuple(data["milestones"])})

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of the base LR during 0-based `epoch`."""
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        if self.schedule == "cosine":
            progress = (epoch - self.warmup_epochs) / max(1, self.epochs - self.warmup_epochs)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.gamma ** sum(epoch >= milestone for milestone in self.milestones)
