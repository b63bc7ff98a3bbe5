"""`graphprune.prune` returns what it reports, on a user-defined network trained on real digits: the returned
network scores `metrics.search_top1` on the search images, fine-tuning with the defaults does not hurt, and
the caller's model comes back untouched (parameters, buffers, mode, device, hooks)."""

import pytest
import torch
from torch import nn

import graphprune
from graphprune.config import dataset_settings, train_recipe
from graphprune.data.splits import load_splits, make_loader
from graphprune.network.evaluate import evaluate
from graphprune.train import train


class BranchyNet(nn.Module):
    """Five convs with BN, a residual add and a concatenation branch: a network the project has never seen."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.inner = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                                   nn.Conv2d(24, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.left = nn.Sequential(nn.Conv2d(16, 12, 3, padding=1, stride=2), nn.BatchNorm2d(12), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(16, 12, 1, stride=2), nn.BatchNorm2d(12), nn.ReLU())
        self.head = nn.Linear(24, classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.inner(x))
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.head(x.mean((2, 3)))


EXAMPLE = torch.zeros(2, 1, 8, 8)
METHODS = ["l1_uniform", "depgraph", "l1_ratio_search", "gat_ppo"]
SETTINGS = {"gat_ppo": {"episodes_per_iteration": 4, "num_envs": 2, "policy": {"hidden": 16}}}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits splits and a BranchyNet trained on the training split (test top-1 about 0.9)."""
    splits = load_splits(dataset_settings({"name": "digits"}))
    torch.manual_seed(0)
    recipe = train_recipe({"epochs": 8, "batch_size": 64, "lr": 0.1})
    trained = train(BranchyNet(), recipe, splits.train, splits.search, run_dir=tmp_path_factory.mktemp("pretrain"),
                    seed=0, config_hash="test", device=torch.device("cpu"))
    return splits, trained.model.eval()


def search_accuracy(model: nn.Module, data: graphprune.PruneData) -> float:
    return evaluate(model, make_loader(data.search, 256), "cpu")["top1"]


def snapshot(model: nn.Module) -> dict:
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "modes": [m.training for m in model.modules()],
            "devices": {p.device for p in model.parameters()},
            "hooks": [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()]}


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(before["state"][k], v) for k, v in after["state"].items())  # parameters and buffers
    assert after["modes"] == before["modes"] and after["devices"] == before["devices"]
    assert after["hooks"] == before["hooks"]


@pytest.mark.parametrize("method", METHODS)
def test_the_returned_network_scores_what_the_metrics_say_and_the_callers_model_is_untouched(digits, method):
    splits, trained = digits
    model = BranchyNet()
    model.load_state_dict(trained.state_dict())
    model.train()  # a caller's model in train mode must stay in train mode
    model.inner[0].register_forward_hook(lambda *_: None)
    before = snapshot(model)

    data = graphprune.PruneData(splits.train, splits.search)
    result = graphprune.prune(model, EXAMPLE, target="flops0.4", method=method, data=data, evaluations=12,
                              settings=SETTINGS.get(method), latency_batch_sizes=())
    one_image = 1 / len(splits.search)
    # The unpruned network's BN statistics put this at chance for most masks (0.08-0.25 in the bug report).
    assert search_accuracy(result.model, data) == pytest.approx(result.metrics.search_top1, abs=one_image + 1e-9)
    assert result.metrics.search_top1 > 0.3
    assert result.metrics.max_abs_diff_masked_vs_pruned < 1e-4
    assert_unchanged(model, before)
    assert set(result.metrics.phase_seconds) >= {"trace", "search", "prune"}


def test_finetuning_with_the_defaults_does_not_lower_test_accuracy(digits):
    splits, trained = digits
    data = graphprune.PruneData(splits.train, splits.search)
    result = graphprune.prune(trained, EXAMPLE, target="flops0.3", method="l1_uniform", data=data,
                              latency_batch_sizes=())
    test_loader = make_loader(splits.test, 256)
    before = evaluate(result.model, test_loader, "cpu")["top1"]
    graphprune.finetune(result)  # the pipeline's recipe: lr 0.01, 10 epochs (lr 0.1 dropped such a net 36 points)
    after = evaluate(result.model, test_loader, "cpu")["top1"]
    assert len(result.history) == 10 and result.history[0].lr == pytest.approx(0.01)
    assert after >= before, (before, after)
    assert "finetune" in result.metrics.phase_seconds


def test_latency_is_timed_with_its_own_thread_count(digits):
    _, trained = digits
    threads = torch.get_num_threads()
    result = graphprune.prune(trained, EXAMPLE, target="flops0.5", method="l1_uniform", latency_batch_sizes=(1,),
                              latency_repeats=2)
    assert result.metrics.latency_threads == 1 and torch.get_num_threads() == threads
    assert "latency" in result.metrics.phase_seconds


def test_an_unknown_setting_fails_before_tracing():
    class Untraceable(nn.Module):  # tracing it would raise something else than the settings error
        def forward(self, x):
            raise AssertionError("traced")

    with pytest.raises(graphprune.errors.GraphpruneError, match="unknown setting.*episodes_per_iteraton"):
        graphprune.prune(Untraceable(), EXAMPLE, method="gat_ppo", settings={"episodes_per_iteraton": 4},
                         data=graphprune.PruneData([(torch.zeros(1, 8, 8), 0)] * 8, [(torch.zeros(1, 8, 8), 0)] * 4))
