"""Which images a search scores: each seed draws its own search images and calibration batches from the search
and training splits, and the held-out images of the final rescoring are never among the search images."""

import pytest
import torch
from torch.utils.data import TensorDataset

from graphprune.errors import GraphpruneError
from graphprune.models import ModelSpec, build_model
from graphprune.network.pruning import ChannelGroups
from graphprune.network.search_eval import build_search_evaluators


def numbered(count: int, offset: int = 0) -> TensorDataset:
    """1x8x8 images whose pixels all hold the image's number, so a drawn image tells where it came from."""
    numbers = torch.arange(offset, offset + count, dtype=torch.float32)
    return TensorDataset(numbers[:, None, None, None].expand(count, 1, 8, 8).clone(), torch.arange(count) % 10)


def numbers_of(images: torch.Tensor) -> set[int]:
    return {int(v) for v in images[:, 0, 0, 0].tolist()}


@pytest.fixture(scope="module")
def network():
    spec = ModelSpec("resnet20", in_channels=1, input_size=8)
    model = build_model(spec).eval()
    return model, ChannelGroups(model, spec.input_shape)


def evaluators(network, seed: int, reselect_images: int = 30, search_images: int | None = 40):
    model, groups = network
    return build_search_evaluators(model, groups, numbered(100), numbered(500, offset=1000),
                                   search_images=search_images, reselect_images=reselect_images,
                                   calibration_batches=2, calibration_batch_size=16, recalibrate_bn=True,
                                   seed=seed, device="cpu")


def test_two_seeds_score_different_search_images_and_calibration_batches(network):
    first, first_held = evaluators(network, seed=0)
    second, second_held = evaluators(network, seed=1)
    assert numbers_of(first.images) != numbers_of(second.images)
    assert numbers_of(first_held.images) != numbers_of(second_held.images)
    assert numbers_of(torch.cat(first.calibration)) != numbers_of(torch.cat(second.calibration))
    assert min(numbers_of(torch.cat(first.calibration))) >= 1000  # calibration: training images only
    again, _ = evaluators(network, seed=0)
    assert numbers_of(again.images) == numbers_of(first.images)  # the same seed, the same images


def test_held_out_images_are_disjoint_from_the_search_images(network):
    search, held_out = evaluators(network, seed=3, reselect_images=30, search_images=None)
    assert len(search.labels) == 70 and len(held_out.labels) == 30
    assert not numbers_of(search.images) & numbers_of(held_out.images)
    assert held_out.calibration is search.calibration or all(
        torch.equal(a, b) for a, b in zip(held_out.calibration, search.calibration, strict=True))
    alone, none = evaluators(network, seed=3, reselect_images=0, search_images=None)
    assert none is None and len(alone.labels) == 100
    with pytest.raises(GraphpruneError, match="exceed the search split"):
        evaluators(network, seed=3, reselect_images=70, search_images=40)
