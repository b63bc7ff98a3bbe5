"""`ModelSpec`: the plain-data description of an architecture, stored inside every checkpoint.

Kept apart from `graphprune.models.zoo` (which builds the networks, and so imports torch) so that the config
code can describe models without importing torch; `graphprune.models` re-exports it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an (unpruned) architecture."""

    name: str
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32
    weights: str | None = None  # local state-dict file (torchvision models only)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        return cls(**data)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.input_size, self.input_size)
