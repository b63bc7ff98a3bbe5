"""Datasets by name, split deterministically into train / search / test.

`search` is held out of the training data: pruning decisions (agent rewards, method selection) are made on
it, while `test` is only ever reported. Splits depend on the dataset settings alone (never on the experiment
seed), so every experiment and method on a dataset sees the same images in the same split. This module
loads data; it does not train or evaluate. The one thing it writes: Fashion-MNIST's decompressed files, which
it prepares under `root` from Debian's `dataset-fashion-mnist` package when they are missing there.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

# The plain-data part (names, settings, shapes) lives in graphprune.data.datasets, without torch; re-exported
# here.
from graphprune.data.datasets import DATASETS as DATASETS
from graphprune.data.datasets import DatasetInfo as DatasetInfo
from graphprune.data.datasets import DatasetSettings as DatasetSettings
from graphprune.data.datasets import dataset_info as dataset_info
from graphprune.data.datasets import dataset_loader
from graphprune.errors import GraphpruneError

# torchvision is imported inside the loaders that need it: importing it takes ~2 s (it loads torch._dynamo),
# which digits, the default, does without.
# The digits test split is fixed across settings so that every experiment reports on the same images.
DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 0
# FakeData's test images come from a disjoint index range of its per-index random generator.
FAKE_TEST_OFFSET = 10**7

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)

# Debian's `dataset-fashion-mnist` package installs the four original gzipped idx files here; torchvision
# reads them only decompressed, from <root>/FashionMNIST/raw/, so they are prepared there when missing.
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class Splits:
    """Three disjoint datasets yielding `(image [C, H, W] float, label int)`, and what they hold."""

    train: Dataset
    search: Dataset
    test: Dataset
    info: DatasetInfo


def load_splits(settings: DatasetSettings) -> Splits:
    """Load a dataset and split it; missing files raise a GraphpruneError that says how to get them."""
    loader = dataset_loader(settings.name)
    return loader(settings, dataset_info(settings))


def make_loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0, workers: int = 0
) -> DataLoader:
    """A DataLoader whose order (and worker seeds) come from its own generator, reseedable via
    `loader.generator.manual_seed(...)`, so batches never depend on the global RNG's history."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=generator,
        pin_memory=torch.cuda.is_available(),
    )


def search_count(search_size: float, available: int) -> int:
    """How many of `available` training images the search split takes."""
    count = round(search_size * available) if search_size < 1 else int(search_size)
    if not 1 <= count < available:
        raise GraphpruneError(
            f"dataset.search_size {search_size} leaves no training data or no search data "
            f"({available} training images available); use a fraction below 1 or a smaller count"
        )
    return count


def hold_out(num_items: int, held_out: int, seed: int) -> tuple[list[int], list[int]]:
    """Split `range(num_items)` by a seeded permutation into (kept, held_out) sorted index lists."""
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[held_out:]), sorted(order[:held_out])


class TransformedSubset(Dataset):
    """`base[i]` for the chosen indices, with this split's own transform applied to the raw image.

    Lets the train split (augmented) and the search split (not augmented) share one loaded dataset.
    """

    def __init__(self, base: Dataset, indices: list[int], transform: Callable | None):
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        image, label = self.base[self.indices[position]]
        return (self.transform(image) if self.transform else image), label


class TensorImages(Dataset):
    """`(transform(image), label)` from uint8 images [N, C, H, W] held in memory, `image` a uint8 [C, H, W].

    With the tensor transforms below this replaces torchvision's per-image PIL round trip, which costs several
    times as much as the transforms themselves.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        return (self.transform(image) if self.transform else image), int(self.labels[index])


class NormalizeUint8:
    """`T.Compose([T.ToTensor(), T.Normalize(mean, std)])` for a uint8 tensor image [C, H, W]: same values."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.float().div(255).sub_(self.mean).div_(self.std)


class PadCropFlip:
    """`T.RandomCrop(size, padding=padding)` + `T.RandomHorizontalFlip()` for a tensor image [C, H, W], `size`
    being the image's own: the same zero padding and the same draws from torch's global RNG in the same order
    (row, column, flip), so a seeded run gives the images torchvision's transforms would."""

    def __init__(self, padding: int):
        self.padding = padding

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        padded = F.pad(image, (self.padding,) * 4)
        top = int(torch.randint(0, 2 * self.padding + 1, size=(1,)))
        left = int(torch.randint(0, 2 * self.padding + 1, size=(1,)))
        image = padded[..., top:top + height, left:left + width]
        return image.flip(-1) if torch.rand(1) < 0.5 else image


def digits_split_indices(num_images: int, settings: DatasetSettings) -> tuple[list[int], list[int], list[int]]:
    """(train, search, test) indices into the digits images; the test part never changes."""
    pool, test = hold_out(num_images, round(DIGITS_TEST_FRACTION * num_images), DIGITS_TEST_SEED)
    train, search = hold_out(len(pool), search_count(settings.search_size, len(pool)), settings.split_seed)
    return [pool[i] for i in train], [pool[i] for i in search], test


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 8, 8] float64, labels [1797] int): scikit-learn's digits, read from the file inside the
    installed package as `sklearn.datasets.load_digits` reads it (same values, tested), without importing
    `sklearn.datasets`, which costs ~2 s (SciPy and more) in every pipeline job on digits."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without running it
    if spec is None or spec.origin is None:
        raise GraphpruneError("the digits dataset comes with scikit-learn: pip install scikit-learn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise GraphpruneError(f"the digits file {path} is missing from the installed scikit-learn; reinstall it: "
                              "`.venv/bin/pip install --force-reinstall scikit-learn`")
    with gzip.open(path, "rt", encoding="utf-8") as compressed:
        data = np.loadtxt(compressed, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def digits_splits(settings: DatasetSettings, info: DatasetInfo) -> Splits:
    pixels, targets = digits_arrays()
    images = torch.tensor(pixels, dtype=torch.float32).unsqueeze(1)  # [N, 1, 8, 8], values 0..16
    labels = torch.tensor(targets, dtype=torch.long)
    train, search, test = digits_split_indices(len(labels), settings)
    # Statistics of the non-test images: independent of the search size and blind to the test images.
    mean, std = images[train + search].mean(), images[train + search].std()
    images = (images - mean) / std

    def subset(indices: list[int]) -> TensorDataset:
        return TensorDataset(images[indices], labels[indices])

    return Splits(subset(train), subset(search), subset(test), info)


def cifar_splits(settings: DatasetSettings, info: DatasetInfo) -> Splits:
    import torchvision
    from torchvision import transforms as T
    is_cifar10 = settings.name == "cifar10"
    dataset_class = torchvision.datasets.CIFAR10 if is_cifar10 else torchvision.datasets.CIFAR100
    folder = "cifar-10-batches-py" if is_cifar10 else "cifar-100-python"
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if is_cifar10 else (CIFAR100_MEAN, CIFAR100_STD)
    normalize = [T.ToTensor(), T.Normalize(mean, std)]
    try:
        train_pool = dataset_class(settings.root, train=True, download=settings.download)
        test_images = dataset_class(
            settings.root, train=False, download=settings.download, transform=T.Compose(normalize)
        )
    except Exception as exc:  # RuntimeError when absent, URLError/OSError when the download fails
        how = (
            "the download failed; run once on a machine with internet access and copy the folder here"
            if settings.download
            else "set `download: true` in the dataset settings on a machine with internet access"
        )
        raise GraphpruneError(
            f"{settings.name} not found under {settings.root} (expected {Path(settings.root) / folder}): "
            f"{how}, or place the extracted {folder} folder under {settings.root} ({exc})"
        ) from exc
    augment = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *normalize])
    return _split_train_pool(train_pool, test_images, augment, T.Compose(normalize), settings, info)


def imagenet_splits(settings: DatasetSettings, info: DatasetInfo) -> Splits:
    import torchvision
    from torchvision import transforms as T
    root = Path(settings.root)
    missing = [str(root / part) for part in ("train", "val") if not (root / part).is_dir()]
    if missing:
        raise GraphpruneError(
            f"imagenet needs class folders under {', '.join(missing)} (torchvision ImageFolder layout: "
            f"{root}/train/<class>/<image> and {root}/val/<class>/<image>); ImageNet cannot be downloaded "
            "automatically, get it from image-net.org and point dataset.root at it"
        )
    train_pool = torchvision.datasets.ImageFolder(root / "train")
    if len(train_pool.classes) != info.num_classes:
        raise GraphpruneError(
            f"{root / 'train'} has {len(train_pool.classes)} class folders but the experiment expects "
            f"{info.num_classes}; set dataset.num_classes: {len(train_pool.classes)}"
        )
    normalize = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    augment = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), *normalize])
    evaluate = T.Compose([T.Resize(256), T.CenterCrop(224), *normalize])
    test_images = torchvision.datasets.ImageFolder(root / "val", transform=evaluate)
    return _split_train_pool(train_pool, test_images, augment, evaluate, settings, info)


def image_folder(root: str | Path, in_channels: int, input_size: int) -> Dataset:
    """A user's images in torchvision's ImageFolder layout (root/<class>/<image>), resized (shorter side) and
    centre-cropped to `input_size`, as RGB or grayscale (`in_channels` 3 or 1), normalised with ImageNet's
    statistics (RGB) or to [-1, 1] (grayscale): the usual inputs of torchvision classifiers."""
    import torchvision
    from torchvision import transforms as T
    root = Path(root)
    if not root.is_dir():
        raise GraphpruneError(f"image folder {root} does not exist (expected {root}/<class>/<image files>)")
    if in_channels not in (1, 3):
        raise GraphpruneError(f"image folders give 1 (grayscale) or 3 (RGB) channels, not {in_channels}")
    # ImageFolder's loader already converts every image to RGB.
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if in_channels == 3 else ((0.5,), (0.5,))
    transform = T.Compose([
        *([T.Grayscale(1)] if in_channels == 1 else []),
        T.Resize(input_size), T.CenterCrop(input_size), T.ToTensor(), T.Normalize(mean, std),
    ])
    try:
        return torchvision.datasets.ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:  # no class folders, or no images in them
        raise GraphpruneError(f"cannot read images from {root}: {exc}") from exc


def prepare_fashion_mnist(root: str | Path) -> Path:
    """Make sure `<root>/FashionMNIST/raw/` holds the four decompressed Fashion-MNIST files torchvision reads;
    missing ones are decompressed from the Debian package's files in FASHION_MNIST_DEBIAN_DIR, files already
    there are kept. Returns the folder. Each file is written under a temporary name in that folder and then
    renamed, so an interrupted preparation never leaves a truncated file under a final name."""
    raw = Path(root) / "FashionMNIST" / "raw"
    missing = [name for name in FASHION_MNIST_FILES if not (raw / name).is_file()]
    sources = {name: FASHION_MNIST_DEBIAN_DIR / f"{name}.gz" for name in missing}
    absent = [source.name for source in sources.values() if not source.is_file()]
    if absent:
        def listed(names: list[str], all_of_them: str) -> str:
            return all_of_them if len(names) == len(FASHION_MNIST_FILES) else ", ".join(names)

        raise GraphpruneError(
            f"fashion_mnist not found: {raw} lacks {listed(missing, 'the four idx files')} and "
            f"{FASHION_MNIST_DEBIAN_DIR} lacks {listed(absent, 'the Debian package files')} to prepare them from; "
            "get them either with `apt-get install dataset-fashion-mnist` "
            f"(graphprune then prepares {raw} from them automatically) or with `download: true` in the dataset "
            "settings on a machine with internet access"
        )
    if missing:
        raw.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        _decompress_atomically(source, raw / name)
    return raw


def _decompress_atomically(source: Path, target: Path) -> None:
    # A name of its own per process: concurrent preparations (parallel jobs) never write the same file.
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    try:
        with gzip.open(source, "rb") as compressed, open(temporary, "xb") as out:
            shutil.copyfileobj(compressed, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, (OSError, EOFError)):
            raise GraphpruneError(f"could not decompress {source} into {target}: {exc}") from exc
        raise


def fashion_mnist_splits(settings: DatasetSettings, info: DatasetInfo) -> Splits:
    import torchvision
    from torchvision import transforms as T
    if not settings.download:
        prepare_fashion_mnist(settings.root)
    raw = Path(settings.root) / "FashionMNIST" / "raw"
    try:
        train_pool = torchvision.datasets.FashionMNIST(settings.root, train=True, download=settings.download)
        test_images = torchvision.datasets.FashionMNIST(settings.root, train=False, download=settings.download)
    except Exception as exc:  # URLError/OSError when the download fails, RuntimeError/ValueError on bad files
        how = (
            "the download failed; install the files with `apt-get install dataset-fashion-mnist` and set "
            "`download: false` (graphprune then prepares them), or download on a machine with internet access"
            if settings.download
            else f"delete {raw} to have it prepared again"
        )
        raise GraphpruneError(f"fashion_mnist could not be read from {raw}: {how} ({exc})") from exc
    # Tensor transforms on the uint8 images torchvision loaded, instead of its __getitem__, which makes a PIL
    # image per item: 72 instead of 283 us per augmented training image (12% of a ResNet-20 training step at
    # 430 img/s on 2 CPU cores), 16 instead of 161 us per evaluated image; the images are the same.
    normalize = NormalizeUint8(FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    augment = T.Compose([PadCropFlip(padding=2), normalize])  # = RandomCrop(28, padding=2) + horizontal flip

    def tensors(dataset: Dataset, transform: Callable | None) -> TensorImages:
        return TensorImages(dataset.data.unsqueeze(1), dataset.targets, transform)

    return _split_train_pool(
        tensors(train_pool, None), tensors(test_images, normalize), augment, normalize, settings, info
    )


def fake_splits(settings: DatasetSettings, info: DatasetInfo) -> Splits:
    import torchvision
    from torchvision import transforms as T
    image_size = info.input_shape

    def fake(size: int, offset: int) -> Dataset:
        return torchvision.datasets.FakeData(
            size, image_size, info.num_classes, transform=T.ToTensor(), random_offset=offset
        )

    train_pool = fake(settings.num_samples, 0)
    test_images = fake(max(1, settings.num_samples // 4), FAKE_TEST_OFFSET)
    return _split_train_pool(train_pool, test_images, None, None, settings, info)


def _split_train_pool(
    train_pool: Dataset,
    test_images: Dataset,
    train_transform: Callable | None,
    eval_transform: Callable | None,
    settings: DatasetSettings,
    info: DatasetInfo,
) -> Splits:
    """Hold the search split out of the official training images; it is evaluated without augmentation."""
    size = len(train_pool)
    train, search = hold_out(size, search_count(settings.search_size, size), settings.split_seed)
    return Splits(
        TransformedSubset(train_pool, train, train_transform),
        TransformedSubset(train_pool, search, eval_transform),
        test_images,
        info,
    )
