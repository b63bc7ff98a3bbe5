import dataclasses

import pytest
import torch

from graphprune.config import dataset_settings
from graphprune.data import (
    KNOWN_DATASETS,
    DatasetInfo,
    dataset_info,
    digits_split_indices,
    hold_out,
    load_splits,
    make_loader,
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
    assert set(KNOWN_DATASETS) == {"digits", "cifar10", "cifar100", "imagenet", "fake"}


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
