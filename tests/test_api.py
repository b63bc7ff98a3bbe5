"""The Python API on a user-defined network: prune with and without data, fine-tune, save/load, user errors."""

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import graphprune
from graphprune.config import search_settings
from graphprune.errors import GraphpruneError
from graphprune.methods.index import available_methods
from graphprune.network.latency import latency_model
from graphprune.network.pruning import ChannelGroups, ChannelMasker


class TinyNet(nn.Module):
    """A network the project has never seen: two conv blocks with a residual add, then a classifier."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(x.mean((2, 3)))


def images(count: int, seed: int = 0, size: int = 8) -> TensorDataset:
    """Three classes told apart by the mean brightness of the image, so accuracy means something."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 3
    x = torch.randn(count, 1, size, size, generator=generator) * 0.3 + labels[:, None, None, None].float()
    return TensorDataset(x, labels)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyNet()


EXAMPLE = torch.zeros(2, 1, 8, 8)


def test_no_module_of_the_package_shadows_an_api_function():
    """Importing a submodule sets the package attribute of its name: a module `graphprune/finetune.py` made
    `graphprune.finetune(...)` fail with "'module' object is not callable" once the CLI had fine-tuned in the
    same process."""
    import pkgutil

    modules = {module.name for module in pkgutil.iter_modules(graphprune.__path__)}
    assert not modules & set(graphprune.__all__)
    assert all(callable(getattr(graphprune, name)) for name in graphprune.__all__ if name != "__version__")


def test_heuristic_needs_no_data_and_pruning_is_exact(model, tmp_path):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = graphprune.prune(model, EXAMPLE, target="flops0.5", method="l1_uniform", latency_batch_sizes=())
    assert result.metrics.flops_ratio <= 0.5 and result.metrics.search_top1 is None
    assert result.metrics.max_abs_diff_masked_vs_pruned < 1e-5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input is unchanged
    assert sum(p.numel() for p in result.model.parameters()) < sum(p.numel() for p in model.parameters())

    graphprune.save(result, tmp_path / "pruned.pt")
    with pytest.raises(GraphpruneError, match="user-defined network: pass an unpruned instance"):
        graphprune.load(tmp_path / "pruned.pt")
    loaded = graphprune.load(tmp_path / "pruned.pt", model=TinyNet())
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), result.model(x), atol=1e-6)
        with ChannelMasker(model.eval(), result.groups, result.mask):
            assert torch.allclose(model(x), loaded.model(x), atol=1e-5)
    assert loaded.spec is None and loaded.mask == result.mask and loaded.meta["method"] == "l1_uniform"


def test_search_method_uses_the_held_out_split_and_the_budget(model):
    data = graphprune.PruneData.split(images(120), search_size=30)
    assert len(data.search) == 30 and len(data.train) == 90
    result = graphprune.prune(model, EXAMPLE, target="params0.6", method="random_search", data=data,
                              evaluations=5, latency_batch_sizes=(1,), latency_repeats=2)
    m = result.metrics
    assert m.params_ratio <= 0.6 and m.masks_evaluated == 5 and result.record["masks_evaluated"] == 5
    assert 0.0 <= m.search_top1 <= 1.0 and m.search_top1_full is not None
    assert set(m.latency) == {"1"} and m.latency["1"]["ratio"] > 0


def test_gat_ppo_prunes_a_user_network_and_finetuning_does_not_lower_its_accuracy(model, tmp_path):
    data = graphprune.PruneData.split(DataLoader(images(150), batch_size=16), search_size=0.2)
    settings = {"episodes_per_iteration": 4, "num_envs": 2, "policy": {"hidden": 16}}
    result = graphprune.prune(model, EXAMPLE, target="flops0.5", method="gat_ppo", data=data, settings=settings,
                              evaluations=8, work_dir=tmp_path / "search", latency_batch_sizes=())
    assert result.metrics.flops_ratio <= 0.5 and result.metrics.masks_evaluated <= 8
    assert (tmp_path / "search").is_dir()  # the search log and checkpoint stay where asked
    graphprune.finetune(result, epochs=2, lr=0.05, batch_size=32, run_dir=tmp_path / "finetune")
    assert len(result.history) == 2 and result.metrics.search_top1_finetuned is not None
    assert result.metrics.search_top1_finetuned >= result.metrics.search_top1  # the returned model scored that


@pytest.mark.parametrize(("call", "message"), [
    (lambda m: graphprune.prune(m, torch.zeros(2, 3, 8, 8), method="l1_uniform"), "does not accept example_inputs"),
    (lambda m: graphprune.prune(m, EXAMPLE, target="flops0.0001", method="l1_uniform"), "impossible"),
    (lambda m: graphprune.prune(m, EXAMPLE, target="speed0.5", method="l1_uniform"), "malformed budget"),
    (lambda m: graphprune.prune(m, EXAMPLE, method="magic"), "unknown pruning method"),
    (lambda m: graphprune.prune(m, EXAMPLE, method="amc"), "held-out images"),
    (lambda m: graphprune.prune(m, EXAMPLE, method="random_search", data=graphprune.PruneData(
        images(20, size=6), images(10, size=6))), r"shape \[1, 6, 6\]"),
    (lambda m: graphprune.prune(m, EXAMPLE, method="random_search", data=graphprune.PruneData(
        images(20), images(10)), search_images=50), "holds only 10 images"),
    (lambda m: graphprune.PruneData.split(images(5), search_size=5), "leaves no training data"),
    (lambda m: graphprune.prune(m, EXAMPLE, method="random_search", data=(images(20), images(10))), "PruneData"),
    (lambda m: graphprune.finetune(graphprune.prune(m, EXAMPLE, method="l1_uniform", latency_batch_sizes=())),
     "finetune needs training images"),
])
def test_user_mistakes_raise_one_error_type(model, call, message):
    with pytest.raises(GraphpruneError, match=message):
        call(model)


def test_a_model_without_prunable_channels_is_named():
    with pytest.raises(GraphpruneError, match="Linear.*no prunable channel group|no prunable channel group"):
        graphprune.prune(nn.Linear(4, 2), torch.zeros(2, 4), method="l1_uniform")


class WithRecurrentLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.rnn, self.head = nn.Conv2d(1, 8, 3), nn.LSTM(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        features, _ = self.rnn(self.conv(x).mean((2, 3))[None])
        return self.head(features[0])


def test_an_unsupported_layer_is_named():
    with pytest.raises(GraphpruneError, match=r"cannot price LSTM \(rnn\)"):
        graphprune.prune(WithRecurrentLayer(), EXAMPLE, method="l1_uniform")


@pytest.fixture(scope="module")
def latency_budget(tmp_path_factory):
    """Latency settings with one shared table of TinyNet (timed once for the module), and a target halfway
    between the smallest latency any mask reaches and the full network's: feasible whatever the timings."""
    settings = {"cache_dir": str(tmp_path_factory.mktemp("tables"))}
    torch.manual_seed(0)
    net = TinyNet()
    groups = ChannelGroups(net, EXAMPLE.shape[1:])
    table = latency_model(net, groups, search_settings({"latency": settings})["latency"])
    smallest = table.ratio(table.min_counts)
    return settings, f"latency{(1 + smallest) / 2:.4f}"


def test_a_latency_budget_is_met_by_the_table_and_the_table_is_cached(model, latency_budget):
    latency, target = latency_budget
    ratio = float(target.removeprefix("latency"))
    tables = sorted(Path(latency["cache_dir"]).iterdir())
    data = graphprune.PruneData.split(images(100), search_size=20)
    first = graphprune.prune(model, EXAMPLE, target=target, method="random_search", data=data, evaluations=3,
                             latency=latency, latency_batch_sizes=())
    assert first.metrics.predicted_latency_ratio <= ratio
    assert first.record["latency_ratio"] == first.metrics.predicted_latency_ratio
    second = graphprune.prune(model, EXAMPLE, target=target, method="l1_uniform", latency=latency,
                              latency_batch_sizes=())
    assert second.metrics.predicted_latency_ratio <= ratio
    assert sorted(Path(latency["cache_dir"]).iterdir()) == tables and len(tables) == 1  # no table rebuilt
    with pytest.raises(GraphpruneError, match="latency.batch_size: 0 is less than the minimum"):
        graphprune.prune(model, EXAMPLE, target="latency0.9", method="l1_uniform", latency={"batch_size": 0})


@pytest.mark.parametrize("method", available_methods())
def test_every_method_meets_a_latency_budget(model, latency_budget, method, tiny_agent):
    latency, target = latency_budget
    data = graphprune.PruneData.split(images(100), search_size=20)
    settings = {"gat_ppo": {"episodes_per_iteration": 4, "num_envs": 2, "policy": {"hidden": 16}},
                "gat_ppo_transfer": {"agent": str(tiny_agent)}}.get(method)
    result = graphprune.prune(model, EXAMPLE, target=target, method=method, data=data, evaluations=4,
                              settings=settings, latency=latency, latency_batch_sizes=())
    assert result.metrics.predicted_latency_ratio <= float(target.removeprefix("latency"))
