import dataclasses
import gzip
import pickle
import shutil

import numpy as np
import pytest
import torch
import torchvision
from torchvision import transforms as T

import graphprune.data.splits
from graphprune.config import dataset_settings
from graphprune.data.splits import (
    DATASETS,
    FASHION_MNIST_DEBIAN_DIR,
    FASHION_MNIST_FILES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    DatasetInfo,
    dataset_info,
    digits_split_indices,
    hold_out,
    load_splits,
    make_loader,
    prepare_fashion_mnist,
)
from graphprune.errors import GraphpruneError

DIGITS_IMAGES = 1797


def test_digits_splits_partition_the_dataset():
    train, search, test = digits_split_indices(DIGITS_IMAGES, dataset_settings({"name": "digits", "search_size": 300}))
    assert (len(train), len(search), len(test)) == (DIGITS_IMAGES - 359 - 300, 300, 359)
    assert sorted(train + search + test) == list(range(DIGITS_IMAGES))


def test_digits_test_split_is_fixed_and_search_split_follows_its_settings():
    base = digits_split_indices(DIGITS_IMAGES, dataset_settings({"name": "digits"}))
    other = digits_split_indices(DIGITS_IMAGES, dataset_settings({"name": "digits", "search_size": 100, "split_seed": 7}))
    again = digits_split_indices(DIGITS_IMAGES, dataset_settings({"name": "digits"}))
    assert base == again
    assert base[2] == other[2]
    assert base[1] != other[1] and len(other[1]) == 100


def test_digits_loads_normalised_tensors_with_info():
    splits = load_splits(dataset_settings({"name": "digits", "search_size": 300}))
    assert splits.info == DatasetInfo("digits", num_classes=10, in_channels=1, input_size=8)
    assert [len(splits.train), len(splits.search), len(splits.test)] == [1138, 300, 359]
    train_images = splits.train.tensors[0]
    assert train_images.shape[1:] == (1, 8, 8)
    assert abs(train_images.mean().item()) < 0.1 and 0.9 < train_images.std().item() < 1.1
    assert set(splits.test.tensors[1].tolist()) == set(range(10))
    again = load_splits(dataset_settings({"name": "digits", "search_size": 300}))
    assert torch.equal(again.search.tensors[0], splits.search.tensors[0])


def test_fake_splits_are_disjoint_and_shaped():
    settings = dataset_settings({"name": "fake", "num_samples": 40, "search_size": 0.25, "in_channels": 1,
                                 "input_size": 8, "num_classes": 3})
    splits = load_splits(settings)
    assert set(splits.train.indices).isdisjoint(splits.search.indices)
    assert sorted(splits.train.indices + splits.search.indices) == list(range(40))
    assert (len(splits.search), len(splits.test)) == (10, 10)
    image, label = splits.train[0]
    assert image.shape == (1, 8, 8) and 0 <= label < 3
    assert dataset_info(settings) == splits.info


def test_hold_out_is_a_seeded_partition():
    kept, held = hold_out(20, 5, seed=1)
    assert len(held) == 5 and sorted(kept + held) == list(range(20))
    assert hold_out(20, 5, seed=1) == (kept, held)
    assert hold_out(20, 5, seed=2) != (kept, held)


def test_loader_order_comes_from_its_seed():
    dataset = torch.utils.data.TensorDataset(torch.arange(50))

    def order(seed):
        return torch.cat([batch for (batch,) in make_loader(dataset, 8, shuffle=True, seed=seed)]).tolist()

    assert order(1) == order(1) != order(2)
    assert sorted(order(1)) == list(range(50))


def test_unknown_dataset_lists_the_known_ones():
    settings = dataclasses.replace(dataset_settings({"name": "digits"}), name="mnist")
    with pytest.raises(GraphpruneError, match="unknown dataset 'mnist'; known datasets: digits, cifar10"):
        load_splits(settings)
    assert set(DATASETS) == {"digits", "cifar10", "cifar100", "imagenet", "fashion_mnist", "fake"}


def noise_splits(settings, info):
    """A dataset the package does not know: seeded noise images with labels, split as the real ones are."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(60, *info.input_shape, generator=generator)
    labels = torch.randint(0, info.num_classes, (60,), generator=generator)
    train_pool = torch.utils.data.TensorDataset(images[:48], labels[:48])
    test = torch.utils.data.TensorDataset(images[48:], labels[48:])
    return graphprune.data.splits._split_train_pool(train_pool, test, None, None, settings, info)


def test_a_new_dataset_needs_its_loader_and_one_table_line(monkeypatch):
    """Add a dataset (its loader above, its line in datasets.DATASETS), nothing else: a config names it and a
    model is sized for it, and its splits load, with the search split held out of training."""
    from test_config import minimal_config

    from graphprune.config import config_from_dict
    from graphprune.data import datasets

    monkeypatch.setitem(datasets.DATASETS, "noise", datasets.DatasetEntry(f"{__name__}:noise_splits", (3, 1, 6)))
    experiment = config_from_dict(minimal_config(dataset={"name": "noise", "search_size": 12})).experiment("exp")
    assert (experiment.model.num_classes, experiment.model.input_shape) == (3, (1, 6, 6))
    splits = load_splits(experiment.dataset)
    assert (len(splits.train), len(splits.search), len(splits.test)) == (36, 12, 12)
    assert splits.train[0][0].shape == (1, 6, 6)


@pytest.mark.parametrize(("name", "folder"), [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_cifar_files_say_where_and_how(tmp_path, name, folder):
    settings = dataset_settings({"name": name, "root": str(tmp_path), "download": False})
    with pytest.raises(GraphpruneError) as error:
        load_splits(settings)
    message = str(error.value)
    assert str(tmp_path) in message and folder in message and "download: true" in message


def test_missing_imagenet_folders_are_named(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(GraphpruneError, match=f"class folders under {tmp_path / 'val'}"):
        load_splits(dataset_settings({"name": "imagenet", "root": str(tmp_path)}))


def test_search_split_must_leave_training_data():
    with pytest.raises(GraphpruneError, match="search_size 2000"):
        load_splits(dataset_settings({"name": "digits", "search_size": 2000}))


# Fashion-MNIST: the real files from Debian's dataset-fashion-mnist package, loaded once for the module.
FASHION_MNIST_BYTES = {"train-images-idx3-ubyte": 47_040_016, "train-labels-idx1-ubyte": 60_008,
                       "t10k-images-idx3-ubyte": 7_840_016, "t10k-labels-idx1-ubyte": 10_008}


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory, debian_fashion_mnist):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def fashion_splits(fashion_root):
    return load_splits(dataset_settings({"name": "fashion_mnist", "root": str(fashion_root)}))


def test_fashion_mnist_is_prepared_from_the_debian_files(fashion_root, fashion_splits):
    raw = fashion_root / "FashionMNIST" / "raw"
    assert sorted(path.name for path in raw.iterdir()) == sorted(FASHION_MNIST_FILES)  # no temporary files left
    for name, size in FASHION_MNIST_BYTES.items():
        assert (raw / name).stat().st_size == size
    with gzip.open(FASHION_MNIST_DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz") as compressed:
        assert (raw / "t10k-labels-idx1-ubyte").read_bytes() == compressed.read()


def test_fashion_mnist_splits_partition_the_official_training_images(fashion_splits):
    train, search = fashion_splits.train, fashion_splits.search
    assert (len(train), len(search), len(fashion_splits.test)) == (54_000, 6_000, 10_000)
    assert set(train.indices).isdisjoint(search.indices)
    assert sorted(train.indices + search.indices) == list(range(60_000))
    assert fashion_splits.info == DatasetInfo("fashion_mnist", num_classes=10, in_channels=1, input_size=28)
    assert dataset_info(dataset_settings({"name": "fashion_mnist"})) == fashion_splits.info


def test_fashion_mnist_yields_normalised_images_and_labels(fashion_splits):
    for split in (fashion_splits.train, fashion_splits.search, fashion_splits.test):
        image, label = split[0]
        assert image.shape == (1, 28, 28) and image.dtype == torch.float32
        assert isinstance(label, int) and 0 <= label < 10
    images, labels = next(iter(make_loader(fashion_splits.search, 2000)))
    assert images.shape == (2000, 1, 28, 28) and set(labels.tolist()) == set(range(10))
    assert abs(images.mean().item()) < 0.05 and 0.95 < images.std().item() < 1.05


def test_fashion_mnist_tensor_transforms_equal_torchvisions_pil_transforms(fashion_root, fashion_splits):
    """The loader skips torchvision's per-image PIL conversion; the images must be the ones it would give."""
    pil = torchvision.datasets.FashionMNIST(fashion_root, train=True)
    normalize = [T.ToTensor(), T.Normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD)]
    augment = T.Compose([T.RandomCrop(28, padding=2), T.RandomHorizontalFlip(), *normalize])
    train, search = fashion_splits.train, fashion_splits.search
    for position in range(50):
        torch.manual_seed(position)
        image, label = train[position]
        torch.manual_seed(position)
        assert torch.equal(image, augment(pil[train.indices[position]][0]))
        assert label == pil[train.indices[position]][1]
        assert torch.equal(search[position][0], T.Compose(normalize)(pil[search.indices[position]][0]))
    torch.manual_seed(0)
    first = torch.stack([train[position][0] for position in range(20)])
    torch.manual_seed(0)
    assert torch.equal(first, torch.stack([train[position][0] for position in range(20)]))
    torch.manual_seed(1)
    assert not torch.equal(first, torch.stack([train[position][0] for position in range(20)]))  # augmented


def test_fashion_mnist_split_follows_its_settings_only(fashion_root, fashion_splits):
    again = load_splits(dataset_settings({"name": "fashion_mnist", "root": str(fashion_root)}))
    assert again.search.indices == fashion_splits.search.indices
    other = load_splits(dataset_settings({"name": "fashion_mnist", "root": str(fashion_root), "split_seed": 1,
                                          "search_size": 5000}))
    assert len(other.search) == 5000 and other.search.indices != fashion_splits.search.indices[:5000]


def test_prepared_fashion_mnist_needs_no_debian_files(fashion_root, fashion_splits, monkeypatch, tmp_path):
    """A folder brought by `dvc pull` (or prepared before) is read as it is."""
    monkeypatch.setattr(graphprune.data.splits, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "absent")
    splits = load_splits(dataset_settings({"name": "fashion_mnist", "root": str(fashion_root)}))
    assert len(splits.test) == 10_000


def test_missing_fashion_mnist_names_both_ways_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(graphprune.data.splits, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "absent")
    with pytest.raises(GraphpruneError) as error:
        load_splits(dataset_settings({"name": "fashion_mnist", "root": str(tmp_path / "data"), "download": False}))
    message = str(error.value)
    assert str(tmp_path / "data" / "FashionMNIST" / "raw") in message and str(tmp_path / "absent") in message
    assert "apt-get install dataset-fashion-mnist" in message and "download: true" in message
    assert not (tmp_path / "data").exists()


@pytest.fixture
def fake_debian_files(tmp_path, monkeypatch):
    """Small stand-ins for the Debian package's gzipped files: the preparation alone, without the real data."""
    folder = tmp_path / "debian"
    folder.mkdir()
    for name in FASHION_MNIST_FILES:
        with gzip.open(folder / f"{name}.gz", "wb") as out:
            out.write(name.encode() * 1000)
    monkeypatch.setattr(graphprune.data.splits, "FASHION_MNIST_DEBIAN_DIR", folder)
    return folder


def test_preparation_adds_only_missing_files(tmp_path, fake_debian_files):
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"already here")
    assert prepare_fashion_mnist(tmp_path / "root") == raw
    assert sorted(path.name for path in raw.iterdir()) == sorted(FASHION_MNIST_FILES)
    assert (raw / "train-images-idx3-ubyte").read_bytes() == b"already here"
    assert (raw / "t10k-labels-idx1-ubyte").read_bytes() == b"t10k-labels-idx1-ubyte" * 1000


def test_failed_preparation_leaves_no_truncated_file(tmp_path, fake_debian_files):
    """A source that breaks off after more than one copied chunk: nothing may remain under a final name."""
    content = torch.randint(0, 256, (3 << 20,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    broken = fake_debian_files / "train-images-idx3-ubyte.gz"
    broken.write_bytes(gzip.compress(content.numpy().tobytes())[: 5 << 19])  # 2.5 of ~3 MiB
    with pytest.raises(GraphpruneError, match=f"could not decompress {broken}"):
        prepare_fashion_mnist(tmp_path / "root")
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    assert list(raw.iterdir()) == []  # the first file to prepare: neither it nor its temporary file remains
    shutil.copy(fake_debian_files / "t10k-images-idx3-ubyte.gz", broken)
    prepare_fashion_mnist(tmp_path / "root")
    assert sorted(path.name for path in raw.iterdir()) == sorted(FASHION_MNIST_FILES)


def test_cifar_test_split_yields_normalised_tensors(tmp_path, monkeypatch):
    """All three CIFAR splits batch through make_loader (the test split used to yield PIL images)."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": torch.full((4, 3072), 128, dtype=torch.uint8).numpy(), "labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)  # no md5s
    splits = load_splits(dataset_settings({"name": "cifar10", "root": str(tmp_path), "search_size": 4}))
    for split in (splits.train, splits.search, splits.test):
        images, labels = next(iter(make_loader(split, 4)))
        assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert torch.allclose(images[:, 0], torch.tensor((128 / 255 - 0.4914) / 0.2470))


def test_digits_are_read_exactly_as_scikit_learn_loads_them():
    from sklearn.datasets import load_digits

    from graphprune.data.splits import digits_arrays

    images, labels = digits_arrays()
    digits = load_digits()
    assert images.dtype == digits.images.dtype and np.array_equal(images, digits.images)
    assert np.array_equal(labels, digits.target)


def test_a_missing_digits_file_names_it_and_the_fix(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from graphprune.data.splits import digits_arrays

    fake_package = SimpleNamespace(origin=str(tmp_path / "sklearn" / "__init__.py"))
    monkeypatch.setattr(graphprune.data.splits.importlib.util, "find_spec", lambda name: fake_package)
    with pytest.raises(GraphpruneError, match="digits.csv.gz is missing.*force-reinstall scikit-learn"):
        digits_arrays()
