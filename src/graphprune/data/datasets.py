"""The datasets graphprune knows, their settings, and what a model needs to know about them, as plain data.

Nothing here loads data (that is `graphprune.data.splits`, which imports torch and re-exports these names),
so the config code can check dataset names and size models without importing torch.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from graphprune.errors import GraphpruneError


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset graphprune can load: `loader` names its function ("module:function", `(DatasetSettings,
    DatasetInfo) -> splits.Splits`, imported on first load, so this table stays torch-free); `shape`: (classes,
    input channels, input size), None where the settings give them (`fake`); `subsets`: the settings'
    `num_classes` may lower the class count (an ImageNet subset)."""

    loader: str
    shape: tuple[int, int, int] | None
    subsets: bool = False


# Every dataset by name: a new one is its loader in a file of its own and one line here (the config checks
# names against this table; the schema does not repeat it).
DATASETS: dict[str, DatasetEntry] = {
    "digits": DatasetEntry("graphprune.data.splits:digits_splits", (10, 1, 8)),
    "cifar10": DatasetEntry("graphprune.data.splits:cifar_splits", (10, 3, 32)),
    "cifar100": DatasetEntry("graphprune.data.splits:cifar_splits", (100, 3, 32)),
    "imagenet": DatasetEntry("graphprune.data.splits:imagenet_splits", (1000, 3, 224), subsets=True),
    "fashion_mnist": DatasetEntry("graphprune.data.splits:fashion_mnist_splits", (10, 1, 28)),
    "fake": DatasetEntry("graphprune.data.splits:fake_splits", None),  # tests and speed benchmarks only
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


def dataset_entry(name: str) -> DatasetEntry:
    """The DATASETS entry `name`; a clear error naming the known ones otherwise."""
    if name not in DATASETS:
        raise GraphpruneError(f"unknown dataset '{name}'; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def dataset_loader(name: str) -> Callable:
    """The function that loads dataset `name` (its entry's `loader`), imported now."""
    return pkgutil.resolve_name(dataset_entry(name).loader)


def dataset_info(settings: DatasetSettings) -> DatasetInfo:
    """Classes, channels and input size of a dataset, known without loading it."""
    entry = dataset_entry(settings.name)
    if entry.shape is None:
        return DatasetInfo(settings.name, settings.num_classes or 10, settings.in_channels, settings.input_size)
    num_classes, in_channels, input_size = entry.shape
    if entry.subsets and settings.num_classes:
        num_classes = settings.num_classes
    return DatasetInfo(settings.name, num_classes, in_channels, input_size)
