"""The analytic cost model equals Torch-Pruning's counter on physically pruned networks; budgets; latency."""

import math
import random
import time

import pytest
import torch
import torch_pruning as tp
from conftest import traced_model

from graphprune.errors import GraphpruneError
from graphprune.models import ModelSpec
from graphprune.models.cifar_resnet import CifarResNet
from graphprune.network.cost import Budget, CostModel, parse_target
from graphprune.network.latency import measure_latency
from graphprune.network.pruning import ChannelGroups, Mask, prune_model

DIGITS = {"in_channels": 1, "input_size": 8}
CIFAR = {"in_channels": 3, "input_size": 32}
TORCHVISION = {"in_channels": 3, "input_size": 64}

ZOO_CASES = [
    ("resnet20", DIGITS), ("resnet56", DIGITS), ("resnet32", CIFAR), ("resnet44", CIFAR), ("resnet110", CIFAR),
    ("vgg16_bn", CIFAR), ("mobilenetv2", CIFAR),
]
TORCHVISION_CASES = [
    (f"torchvision:{arch}", TORCHVISION)
    for arch in ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "vgg16_bn", "densenet121",
                 "efficientnet_b0", "regnet_x_400mf", "convnext_tiny")
]


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """These tensors are tiny; on 2 shared cores intra-op threads cost more than they give (this file took
    40 s with 2 threads and 16 s with 1, measured on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_masks(groups: ChannelGroups, how_many: int, seed: int) -> list[Mask]:
    """Feasible masks with a random kept count per group (uniform in [1, size]) and random channels."""
    rng = random.Random(seed)
    return [
        Mask(groups.sizes, tuple(tuple(sorted(rng.sample(range(s), rng.randint(1, s)))) for s in groups.sizes))
        for _ in range(how_many)
    ]


def counted(model: torch.nn.Module, input_shape) -> tuple[int, int]:
    flops, params = tp.utils.count_ops_and_params(model, torch.zeros(1, *input_shape))
    assert flops == int(flops)
    return int(flops), params


def assert_matches_counter(name: str, shape: dict, random_mask_count: int) -> None:
    model, groups, cost = traced_model(ModelSpec(name, **shape))
    assert len(groups) > 0
    assert (cost.full_flops, cost.full_params) == counted(model, groups.input_shape)
    assert cost.of_mask(groups.full_mask()) == (cost.full_flops, cost.full_params)
    smallest = Mask(groups.sizes, tuple(tuple(range(c)) for c in cost.min_counts))
    for mask in [smallest, *random_masks(groups, random_mask_count, seed=len(name))]:
        pruned = prune_model(model, groups, mask)
        assert cost.of_mask(mask) == counted(pruned, groups.input_shape), mask.counts
        assert cost.flops(mask.counts) < cost.full_flops


@pytest.mark.parametrize(("name", "shape"), ZOO_CASES, ids=[n for n, _ in ZOO_CASES])
def test_zoo_cost_equals_counter_on_pruned_network(name, shape):
    assert_matches_counter(name, shape, random_mask_count=3)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "shape"), TORCHVISION_CASES, ids=[n for n, _ in TORCHVISION_CASES])
def test_torchvision_cost_equals_counter_on_pruned_network(name, shape):
    assert_matches_counter(name, shape, random_mask_count=1)


def test_counts_api_agrees_with_mask_api_and_ratios():
    _model, groups, cost = traced_model(ModelSpec("resnet20", **DIGITS))
    mask = random_masks(groups, 1, seed=1)[0]
    flops, params = cost.of_mask(mask)
    assert (cost.flops(mask.counts), cost.params(list(mask.counts))) == (flops, params)
    assert cost.ratio("flops", mask.counts) == pytest.approx(flops / cost.full_flops)
    assert cost.ratio("params", mask.counts) == pytest.approx(params / cost.full_params)
    assert cost.ratio("flops", groups.sizes) == 1.0
    with pytest.raises(GraphpruneError, match="flops, params, latency"):
        cost.ratio("energy", mask.counts)
    with pytest.raises(GraphpruneError, match="latency budget needs a latency table"):
        cost.ratio("latency", mask.counts)
    assert cost.priced_metrics == ("flops", "params")
    with pytest.raises(ValueError, match="one per group"):
        cost.flops(mask.counts[:-1])


def test_min_counts_follow_min_channels():
    model, _groups, _cost = traced_model(ModelSpec("resnet20", **DIGITS))
    groups = ChannelGroups(model, (1, 8, 8), min_channels=2)
    cost = CostModel(model, groups)
    assert cost.min_counts == tuple(min(2, s) for s in groups.sizes)
    assert cost.ratio("flops", cost.min_counts) > 0


@pytest.mark.parametrize(
    ("target", "metric", "ratio"),
    [("flops0.5", "flops", 0.5), ("params0.3", "params", 0.3), ("flops1", "flops", 1.0), ("params.25", "params", 0.25)],
)
def test_parse_target(target, metric, ratio):
    budget = parse_target(target)
    assert budget == Budget(metric, ratio)
    assert parse_target(str(budget)) == budget


@pytest.mark.parametrize("target", ["flops", "flops0", "flops1.5", "energy0.5", "flops-0.5", "0.5", "flops0.5x", ""])
def test_malformed_target_says_the_form(target):
    with pytest.raises(GraphpruneError, match=r"<metric><ratio> with a metric of flops, params, latency.*\(0, 1\]"):
        parse_target(target)


def test_budget_rejects_bad_fields():
    with pytest.raises(GraphpruneError):
        Budget("flops", 0.0)
    with pytest.raises(GraphpruneError):
        Budget("macs", 0.5)


def test_impossible_budget_names_smallest_ratio_and_meets():
    _model, groups, cost = traced_model(ModelSpec("resnet20", **DIGITS))
    smallest = cost.ratio("flops", cost.min_counts)
    assert 0 < smallest < 0.05
    achievable = math.ceil(smallest * 10_000) / 10_000
    with pytest.raises(GraphpruneError, match=f"at least {achievable:.4f}"):
        cost.check_feasible(Budget("flops", smallest / 2))
    cost.check_feasible(Budget("flops", achievable))
    cost.check_feasible(Budget("flops", smallest))
    cost.check_feasible(parse_target("params0.5"))
    assert cost.meets(Budget("flops", smallest), cost.min_counts)
    assert cost.meets(parse_target("flops1"), groups.sizes)
    assert not cost.meets(parse_target("flops0.5"), groups.sizes)
    half = [max(1, s // 2) for s in groups.sizes]
    assert cost.meets(parse_target("params0.5"), half) == (cost.params(half) <= 0.5 * cost.full_params)


def test_resnet56_call_is_well_under_a_millisecond():
    _model, groups, cost = traced_model(ModelSpec("resnet56", **DIGITS))
    counts = random_masks(groups, 1, seed=2)[0].counts
    calls = 1000
    start = time.perf_counter()
    for _ in range(calls):
        cost.flops(counts)
        cost.params(counts)
    per_call = (time.perf_counter() - start) / (2 * calls)
    assert per_call < 1e-3


def test_measure_latency_orders_a_much_smaller_model_first():
    big, small = CifarResNet(8, width=64), CifarResNet(8, width=4)  # about 250x fewer FLOPs
    big.train()
    small.eval()
    result = measure_latency(small, big, (3, 32, 32), batch_sizes=(1, 8), warmup=1, repeats=5)
    assert sorted(result) == [1, 8]
    for batch in (1, 8):
        assert result[batch]["model_s"] > 0 and result[batch]["reference_s"] > 0
        assert result[batch]["ratio"] == pytest.approx(result[batch]["model_s"] / result[batch]["reference_s"])
        assert result[batch]["ratio"] < 1
    assert big.training and not small.training  # flags restored as they were
    with pytest.raises(GraphpruneError, match="repeats"):
        measure_latency(small, big, (3, 32, 32), repeats=0)


class ConvThenAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.attention = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        tokens = self.conv(x).flatten(2).transpose(1, 2)  # [B, positions, 8]
        return self.fc(self.attention(tokens, tokens, tokens)[0].mean(1))


def test_unpriceable_layer_is_refused_by_name():
    model = ConvThenAttention().eval()
    with pytest.raises(GraphpruneError, match="cannot price MultiheadAttention"):
        CostModel(model, ChannelGroups(model, (3, 8, 8)))
