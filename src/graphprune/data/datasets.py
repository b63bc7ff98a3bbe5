"""The datasets graphprune knows, their settings, and what a model needs to know about them, as plain data.

Nothing here loads data (that is `graphprune.data.splits`, which imports torch and re-exports these names),
so the config code can check dataset names and size models without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.errors import GraphpruneError

# Every dataset `graphprune.data.splits` can load, in the order of the config schema's enum.
KNOWN_DATASETS = ("digits", "cifar10", "cifar100", "imagenet", "fashion_mnist", "fake")

# (classes, input channels, input size) of the datasets whose shape is fixed; `fake` takes its shape from the
# settings, and `imagenet` may be a subset with fewer classes.
_FIXED_INFO = {
    "digits": (10, 1, 8),
    "cifar10": (10, 3, 32),
    "cifar100": (100, 3, 32),
    "imagenet": (1000, 3, 224),
    "fashion_mnist": (10, 1, 28),
}


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about its data."""

    name: str
    num_classes: int
    in_channels: int
    input_size: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.input_size, self.input_size)


@dataclass(frozen=True)
class DatasetSettings:
    """The `dataset` section of an experiment (defaults come from the config schema).

    search_size: a fraction of the training data if below 1, else a number of images.
    num_classes: overrides the class count of `imagenet` (e.g. a 100-class subset) and sets it for `fake`.
    num_samples, in_channels, input_size: the shape of `fake` data; ignored by real datasets.
    """

    name: str
    root: str
    download: bool
    search_size: float
    split_seed: int
    num_classes: int | None
    num_samples: int
    in_channels: int
    input_size: int


def check_known_dataset(name: str) -> None:
    if name not in KNOWN_DATASETS:
        raise GraphpruneError(f"unknown dataset '{name}'; known datasets: {', '.join(KNOWN_DATASETS)}")


def dataset_info(settings: DatasetSettings) -> DatasetInfo:
    """Classes, channels and input size of a dataset, known without loading it."""
    check_known_dataset(settings.name)
    if settings.name == "fake":
        return DatasetInfo("fake", settings.num_classes or 10, settings.in_channels, settings.input_size)
    num_classes, in_channels, input_size = _FIXED_INFO[settings.name]
    if settings.name == "imagenet" and settings.num_classes:
        num_classes = settings.num_classes
    return DatasetInfo(settings.name, num_classes, in_channels, input_size)
