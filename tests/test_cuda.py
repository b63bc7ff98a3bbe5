"""CUDA code paths: run by `make test-gpu` (bench/gpu_check.py) on a machine with a GPU, skipped elsewhere."""

import pytest
import torch

import graphprune
from graphprune.config import train_recipe
from graphprune.models import ModelSpec, build_model
from graphprune.network.latency import measure_latency
from graphprune.network.pruning import ChannelGroups, ChannelMasker, Mask, prune_model
from graphprune.train import train

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

SPEC = ModelSpec("resnet20", num_classes=4, in_channels=1, input_size=8)


def half_mask(groups: ChannelGroups) -> Mask:
    return Mask(groups.sizes, tuple(tuple(range(0, size, 2)) for size in groups.sizes))


def test_pruned_equals_masked_on_cuda():
    torch.manual_seed(0)
    model = build_model(SPEC).cuda().eval()
    groups = ChannelGroups(model, SPEC.input_shape)
    mask = half_mask(groups)
    pruned = prune_model(model, groups, mask)
    x = torch.randn(8, *SPEC.input_shape, device="cuda")
    with torch.no_grad(), ChannelMasker(model, groups, mask):
        assert torch.allclose(model(x), pruned(x), atol=1e-4)


def test_amp_training_on_cuda_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    labels = torch.arange(256) % 4
    images = torch.randn(256, *SPEC.input_shape) * 0.3 + labels[:, None, None, None].float()
    data = torch.utils.data.TensorDataset(images, labels)
    recipe = train_recipe({"epochs": 3, "batch_size": 64, "lr": 0.05, "amp": True})
    result = train(build_model(SPEC), recipe, data, data, run_dir=tmp_path, seed=0, config_hash="cuda",
                   device=torch.device("cuda"))
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_latency_on_cuda_is_measured():
    model = build_model(SPEC).cuda()
    groups = ChannelGroups(model, SPEC.input_shape)
    pruned = prune_model(model, groups, half_mask(groups))
    latency = measure_latency(pruned, model, SPEC.input_shape, (1, 64), "cuda", repeats=5)
    assert all(value["model_s"] > 0 and value["ratio"] > 0 for value in latency.values())


def test_a_search_runs_on_cuda():
    torch.manual_seed(0)
    labels = torch.arange(120) % 4
    images = torch.randn(120, *SPEC.input_shape) * 0.3 + labels[:, None, None, None].float()
    data = graphprune.PruneData.split(torch.utils.data.TensorDataset(images, labels), search_size=40)
    result = graphprune.prune(build_model(SPEC), torch.zeros(2, *SPEC.input_shape), target="flops0.5",
                              method="random_search", data=data, evaluations=4, device="cuda")
    assert result.metrics.flops_ratio <= 0.5 and result.metrics.masks_evaluated == 4
