"""LatencyModel: interpolation arithmetic (with a fake timer, so nothing here can flake), monotonicity, the
full network's ratio, the on-disk cache and its refusal of tables made for something else."""

import functools
import random

import numpy as np
import pytest
import torch
from torch import nn

from graphprune.errors import GraphpruneError
from graphprune.models.cifar_resnet import CifarResNet
from graphprune.models.mobilenetv2 import CifarMobileNetV2
from graphprune.network import latency
from graphprune.network.latency import LatencyModel, axis_knots
from graphprune.network.pruning import ChannelGroups, Mask, prune_model

OVERHEAD_S = 5e-6  # the fake network's time outside conv/linear layers


class FlattenNet(nn.Module):
    """Conv -> BN -> ReLU -> flatten into a linear layer (each channel feeds 16 features) -> classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 12, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 10, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(10 * 4 * 4, 20)
        self.fc2 = nn.Linear(20, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv2(x)).flatten(1))))


MODELS = {
    "resnet8": lambda: CifarResNet(8, num_classes=4, in_channels=1),
    "mobilenetv2": lambda: CifarMobileNetV2(num_classes=4, in_channels=1),
    "flatten": FlattenNet,
}
INPUT_SHAPE = (1, 8, 8)


def layer_seconds(module: nn.Module, x: torch.Tensor) -> float:
    """Analytic time of one conv/linear call: bilinear in its widths (depthwise: linear), so the tables'
    bilinear interpolation must reproduce it exactly."""
    if isinstance(module, nn.Conv2d):
        work = module.in_channels * module.out_channels // module.groups * module.kernel_size[0] ** 2
        return 1e-6 * (1 + work * x.shape[-1] * x.shape[-2] / 100)
    return 1e-6 * (1 + module.in_features * module.out_features / 100)


def network_seconds(net: nn.Module, x: torch.Tensor) -> float:
    """The fake network's time: its conv/linear calls priced by `layer_seconds`, plus a fixed overhead."""
    total = [OVERHEAD_S]
    hooks = [m.register_forward_pre_hook(lambda m, inputs: total.append(layer_seconds(m, inputs[0])))
             for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for hook in hooks:
            hook.remove()
    return sum(total)


class FakeTimer:
    """Stands in for `latency.time_forward`: counts calls; analytic (default) or random but fixed per call."""

    def __init__(self, noisy: bool = False):
        self.calls = 0
        self.noisy = noisy
        self.rng = random.Random(0)

    def __call__(self, module, x, number=1, clock="wall"):
        self.calls += 1
        seconds = layer_seconds(module, x) if isinstance(module, (nn.Conv2d, nn.Linear)) else \
            network_seconds(module, x)
        return seconds * (self.rng.uniform(0.5, 1.5) if self.noisy else 1.0)


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """Tiny tensors: on 2 shared cores a second intra-op thread made the trace 20x slower (0.4 s -> 8 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def timer(monkeypatch):
    fake = FakeTimer()
    monkeypatch.setattr(latency, "time_forward", fake)
    return fake


@functools.cache
def setup(name: str, seed: int = 0):
    """(model, groups), shared by the tests: LatencyModel leaves the model unchanged."""
    torch.manual_seed(seed)
    model = MODELS[name]().eval()
    return model, ChannelGroups(model, INPUT_SHAPE)


def random_counts(groups: ChannelGroups, how_many: int, seed: int) -> list[tuple[int, ...]]:
    rng = random.Random(seed)
    return [tuple(rng.randint(1, size) for size in groups.sizes) for _ in range(how_many)]


def first_channels(groups: ChannelGroups, counts) -> Mask:
    return Mask(groups.sizes, tuple(tuple(range(c)) for c in counts))


@pytest.mark.parametrize(("name", "grid", "masks"), [
    ("resnet8", 2, 6), ("resnet8", 5, 6), ("flatten", 2, 6), ("flatten", 5, 6), ("mobilenetv2", 5, 2),
])
def test_prediction_equals_fake_networks_time(name, grid, masks, timer, tmp_path):
    """With layer times bilinear in the widths and a fixed overhead, every prediction is exact: this checks
    the traced widths, the knots, the kinds of width (block 4: the narrow axes split, the wide ones not),
    depthwise and flatten-into-linear layers, the interpolation and the remainder."""
    model, groups = setup(name)
    model_latency = LatencyModel(model, groups, batch_size=2, grid=grid, block=4, warmup=0, repeats=1,
                                 cache_dir=tmp_path)
    x = torch.zeros(2, *INPUT_SHAPE)
    assert model_latency.full_seconds == pytest.approx(network_seconds(model, x), rel=1e-12)
    for counts in random_counts(groups, masks, seed=1) + [model_latency.min_counts]:
        pruned = prune_model(model, groups, first_channels(groups, counts))
        assert model_latency.seconds(counts) == pytest.approx(network_seconds(pruned, x), rel=1e-9)
    assert model_latency.remainder_intercept == pytest.approx(OVERHEAD_S, rel=1e-6)
    assert model_latency.remainder_slope == pytest.approx(0.0, abs=1e-18)


@pytest.mark.parametrize("name", ["resnet8", "mobilenetv2"])
def test_monotone_in_counts_and_one_at_full_counts_even_with_noisy_timings(name, monkeypatch, tmp_path):
    monkeypatch.setattr(latency, "time_forward", FakeTimer(noisy=True))
    model, groups = setup(name)
    model_latency = LatencyModel(model, groups, batch_size=2, grid=3, block=4, warmup=1, repeats=1,
                                 cache_dir=tmp_path)
    assert model_latency.ratio(groups.sizes) == pytest.approx(1.0, rel=1e-12)
    rng = np.random.default_rng(0)
    counts = np.stack([rng.integers(1, size + 1, 300) for size in groups.sizes], axis=1)  # [300, G]
    base = model_latency.seconds_many(counts)
    for g in range(len(groups)):
        fewer = counts.copy()
        fewer[:, g] = np.maximum(fewer[:, g] - rng.integers(1, 4, len(fewer)), 1)
        assert (model_latency.seconds_many(fewer) <= base + 1e-15).all(), f"dropping channels of group {g}"
    assert (base <= model_latency.full_seconds + 1e-15).all()
    assert model_latency.seconds(counts[0]) == pytest.approx(base[0], rel=1e-12)


def test_cache_hit_reads_the_same_table_without_timing(timer, tmp_path):
    model, groups = setup("resnet8")
    first = LatencyModel(model, groups, batch_size=2, grid=3, repeats=1, cache_dir=tmp_path)
    assert first.built and timer.calls > 0 and first.path.parent == tmp_path and first.path.exists()
    calls = timer.calls
    second = LatencyModel(model, groups, batch_size=2, grid=3, repeats=1, cache_dir=tmp_path)
    assert timer.calls == calls and not second.built and second.path == first.path
    assert first.raw_tables.keys() == second.raw_tables.keys()
    assert all(torch.equal(first.raw_tables[k], second.raw_tables[k]) for k in first.raw_tables)
    counts = random_counts(groups, 5, seed=2)
    assert [first.seconds(c) for c in counts] == [second.seconds(c) for c in counts]
    # Another batch size, grid or thread count is another cache entry; rebuild=True times again.
    assert LatencyModel(model, groups, batch_size=3, grid=3, repeats=1, cache_dir=tmp_path).path != first.path
    rebuilt = LatencyModel(model, groups, batch_size=2, grid=3, repeats=1, cache_dir=tmp_path, rebuild=True)
    assert rebuilt.built and timer.calls > calls


def test_a_table_for_another_batch_size_model_or_allocator_is_refused(timer, tmp_path, monkeypatch):
    table = tmp_path / "table.pt"
    model, groups = setup("resnet8")
    LatencyModel(model, groups, batch_size=2, grid=3, repeats=1, table=table)
    with pytest.raises(GraphpruneError, match=r"batch size 2 \(here: 3\)"):
        LatencyModel(model, groups, batch_size=3, grid=3, repeats=1, table=table)
    other, other_groups = setup("flatten")
    with pytest.raises(GraphpruneError, match="model structure"):
        LatencyModel(other, other_groups, batch_size=2, grid=3, repeats=1, table=table)
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")
    with pytest.raises(GraphpruneError, match="allocator settings '' \\(here: 'MALLOC_MMAP_MAX_=0'\\)"):
        LatencyModel(model, groups, batch_size=2, grid=3, repeats=1, table=table)
    monkeypatch.delenv("MALLOC_MMAP_MAX_")
    table.write_bytes(b"not a table")
    with pytest.raises(GraphpruneError, match="cannot read"):
        LatencyModel(model, groups, batch_size=2, grid=3, repeats=1, table=table)


def test_bad_settings_are_one_clear_error(tmp_path):
    model, groups = setup("resnet8")
    with pytest.raises(GraphpruneError, match="remainder"):
        LatencyModel(model, groups, remainder="linear", cache_dir=tmp_path)
    with pytest.raises(GraphpruneError, match="clock 'cpu'"):
        LatencyModel(model, groups, threads=2, clock="cpu", cache_dir=tmp_path)
    with pytest.raises(GraphpruneError, match="batch_size >= 1"):
        LatencyModel(model, groups, batch_size=0, cache_dir=tmp_path)


def test_axis_knots_sample_every_block_of_narrow_axes_and_spread_wide_ones():
    assert axis_knots(1, 16, 5, 8) == ((1, 7, 8, 9, 15, 16), True)
    assert axis_knots(3, 3, 5, 8) == ((3,), True)
    knots, split = axis_knots(1, 512, 5, 8)
    assert not split and knots[0] == 1 and knots[-1] == 512 and len(knots) == 15
    assert {8, 256, 512} <= set(knots) and {255, 511} <= set(knots)


def test_real_timing_restores_threads_and_gives_sane_figures(tmp_path):
    """The real timer on a tiny model (no accuracy claim here: bench/latency_prediction.py measures that)."""
    model, groups = setup("resnet8")
    torch.set_num_threads(2)
    try:
        model_latency = LatencyModel(model, groups, batch_size=1, grid=2, warmup=1, repeats=2,
                                     cache_dir=tmp_path)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert model_latency.clock == "cpu" and model_latency.threads == 1
    assert model_latency.full_seconds > 0 and model_latency.ratio(groups.sizes) == pytest.approx(1.0)
    assert 0 < model_latency.ratio(model_latency.min_counts) <= 1.0
