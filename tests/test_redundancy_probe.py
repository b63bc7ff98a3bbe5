"""bench/redundancy_probe.py's planting: the planted channels are free to remove, a quarter of each block's inner
channels, and (kind `ignored`) invisible to filter magnitude. A random tiny ResNet-20: no trained baseline."""

import sys
from pathlib import Path

import pytest
import torch

import graphprune
from graphprune.methods.importance import filter_l1_scores
from graphprune.models import ModelSpec, build_model
from graphprune.network.pruning import ChannelGroups

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import redundancy_probe  # noqa: E402

SPEC = ModelSpec("resnet20", in_channels=1, input_size=8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_model(SPEC).eval()
    with torch.no_grad():  # non-trivial BN: an identity BN would hide a wrong statistics adjustment
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.normal_(0, 0.3)
                module.running_var.uniform_(0.5, 2.0)
    return net


@pytest.mark.parametrize("kind", redundancy_probe.KINDS)
def test_planted_channels_are_free_to_remove_and_a_quarter_of_each_block(model, kind):
    planted_model, planted = redundancy_probe.plant(model, kind, seed=0)
    groups = ChannelGroups(planted_model, SPEC.input_shape)
    index = redundancy_probe.group_of_root(groups, list(planted))
    assert len(planted) == 9  # ResNet-20: 3 stages of 3 blocks
    for root, channels in planted.items():
        assert root.endswith(".conv1") and groups.groups[index[root]].root == root
        assert len(channels) == groups.sizes[index[root]] // 4
    mask = redundancy_probe.planted_mask(groups, planted)
    assert sum(len(mask.pruned(g)) for g in range(len(groups))) == sum(len(c) for c in planted.values())
    inputs = torch.randn(4, *SPEC.input_shape, generator=torch.Generator().manual_seed(1))
    assert redundancy_probe.masked_difference(planted_model, groups, mask, inputs) <= redundancy_probe.TOLERANCE
    # The check has teeth: the same channels are not free in the unplanted network.
    assert redundancy_probe.masked_difference(model, groups, mask, inputs) > 1e-3
    if kind == "ignored":
        scores = filter_l1_scores(planted_model, groups)
        for root, channels in planted.items():
            largest = scores[index[root]].argsort()[::-1][: len(channels)]
            assert sorted(largest.tolist()) == channels  # magnitude methods would keep them first


def test_l1_uniform_keeps_every_ignored_channel(model):
    planted_model, planted = redundancy_probe.plant(model, "ignored", seed=0)
    result = graphprune.prune(planted_model, torch.zeros(2, *SPEC.input_shape), "flops0.5", "l1_uniform",
                              latency_batch_sizes=())
    share, chance = redundancy_probe.planted_pruned(result.mask, result.groups, planted)
    assert share == 0.0 and chance > 0.0  # it prunes the blocks' inner channels, never the planted ones
