"""The sliced forward is the pruned network: same outputs and BN recalibration as physical pruning, the same
search accuracies as masking, the model untouched; models it cannot slice fall back to masking."""

import logging

import pytest
import torch
from torch import nn

from graphprune.models import ModelSpec, build_model
from graphprune.network.evaluate import evaluation_mode, recalibrate_batch_norm
from graphprune.network.pruning import ChannelGroups, Mask, prune_model
from graphprune.network.search_eval import SearchEvaluator
from graphprune.network.sliced import SlicedNetwork

TOLERANCE = 1e-4


def setup(name: str, in_channels: int, size: int) -> tuple[nn.Module, ChannelGroups, torch.Tensor]:
    torch.manual_seed(0)
    spec = ModelSpec(name, in_channels=in_channels, input_size=size)
    model = build_model(spec)
    with torch.no_grad():  # statistics and affine parameters away from their fresh values, so a wrong
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # channel map shows
            bn.running_mean.normal_(0.0, 0.3)
            bn.running_var.uniform_(1.0, 2.0)
            bn.weight.uniform_(0.2, 0.8)
            bn.bias.normal_(0.0, 0.3)
    images = torch.randn(24, in_channels, size, size, generator=torch.Generator().manual_seed(1))
    return model.eval(), ChannelGroups(model, spec.input_shape), images


def random_mask(groups: ChannelGroups, seed: int, keep: float = 0.5) -> Mask:
    generator = torch.Generator().manual_seed(seed)
    flags = []
    for size in groups.sizes:
        flags.append(torch.rand(size, generator=generator) < keep)
        flags[-1][torch.randint(size, (1,), generator=generator)] = True
    return Mask.from_keep_flags(flags)


class FlattenNet(nn.Module):
    """A classifier on flattened feature maps: each channel feeds 4 of the linear layer's inputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, stride=4, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


def flatten_setup() -> tuple[nn.Module, ChannelGroups, torch.Tensor]:
    torch.manual_seed(0)
    model = FlattenNet().eval()
    return model, ChannelGroups(model, (1, 8, 8)), torch.randn(24, 1, 8, 8)


@pytest.mark.parametrize("case", ["resnet20", "flatten"])
def test_sliced_forward_and_recalibration_equal_the_pruned_network(case):
    model, groups, images = setup("resnet20", 1, 8) if case == "resnet20" else flatten_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sliced = SlicedNetwork(model, groups)
    assert SlicedNetwork.supports(model, groups) and sliced.agrees_with_masking()
    mask = random_mask(groups, seed=3)
    pruned = prune_model(model, groups, mask)
    with evaluation_mode(model, pruned), torch.no_grad():
        assert (sliced.forward(sliced.tensors(mask), images) - pruned(images)).abs().max() < TOLERANCE
        recalibrate_batch_norm(pruned, images.split(8))
        tensors = sliced.recalibrated(mask, images.split(8))
        difference = (sliced.forward(tensors, images) - pruned(images)).abs().max()
    assert difference < TOLERANCE
    for key, value in pruned.state_dict().items():  # the pruned network's shapes and BN statistics
        assert tensors[key].shape == value.shape and torch.allclose(tensors[key].float(), value.float(), atol=1e-5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed"


def test_search_accuracies_sliced_equal_masked_in_either_memory_order():
    model, groups, images = setup("resnet20", 1, 8)
    labels = torch.arange(len(images)) % 10
    calibration = list(images.split(12))
    sliced = SearchEvaluator(model, groups, images, labels, calibration)  # NHWC by default
    sliced_nchw = SearchEvaluator(model, groups, images, labels, calibration, channels_last=False)
    masked = SearchEvaluator(model, groups, images, labels, calibration, sliced=False, channels_last=False)
    assert sliced._sliced is not None and masked._sliced is None
    # NHWC: channels are the innermost dimension (stride 1); the caller's NCHW tensor is left as it was
    assert sliced.images.stride(1) == 1 and all(b.stride(1) == 1 for b in sliced.calibration)
    assert images.stride(1) == 8 * 8 and sliced_nchw.images.stride(1) == 8 * 8
    masks = [random_mask(groups, seed, keep) for seed, keep in enumerate((0.3, 0.5, 0.8, 1.0))]
    accuracies = [sliced(mask) for mask in masks]
    assert accuracies == [sliced_nchw(mask) for mask in masks] == [masked(mask) for mask in masks]
    assert len(set(accuracies)) > 1, "the masks must score differently"


def test_depthwise_convolutions_are_scored_by_masking():
    model, groups, images = setup("mobilenetv2", 3, 32)
    assert not SlicedNetwork.supports(model, groups)
    with pytest.raises(ValueError, match="ChannelMasker"):
        SlicedNetwork(model, groups)
    evaluator = SearchEvaluator(model, groups, images[:4], torch.zeros(4, dtype=torch.long), [images[:4]])
    assert evaluator._sliced is None and 0.0 <= evaluator(random_mask(groups, 0)) <= 1.0


class HardCodedWidth(nn.Module):
    """Its forward reads a channel count (a fixed `view`) that slicing does not change."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)).view(-1, 8))


def test_a_forward_slicing_breaks_falls_back_to_masking(caplog):
    model = HardCodedWidth().eval()
    groups = ChannelGroups(model, (1, 8, 8))
    assert SlicedNetwork.supports(model, groups)
    assert not SlicedNetwork(model, groups).agrees_with_masking()
    images = torch.randn(6, 1, 8, 8)
    with caplog.at_level(logging.WARNING, logger="graphprune.network.search_eval"):
        evaluator = SearchEvaluator(model, groups, images, torch.zeros(6, dtype=torch.long), [images])
    assert evaluator._sliced is None and "masking" in caplog.text
    assert 0.0 <= evaluator(random_mask(groups, 1)) <= 1.0
