"""The registries (methods, channel importances, resource metrics) and what a new entry needs."""

import importlib

import pytest

from graphprune.errors import GraphpruneError
from graphprune.methods import base
from graphprune.methods.settings import settings_type_of


@pytest.mark.parametrize("name", sorted(base.METHOD_MODULES))
def test_every_indexed_method_registers_under_its_name(name):
    method = base.get_method(name)
    assert method.name == name
    assert isinstance(method, base.PruningMethod)
    assert method.settings_type is settings_type_of(name)  # the config checks settings with this table


def test_every_registered_method_is_indexed():
    for module in set(base.METHOD_MODULES.values()):
        importlib.import_module(module)
    assert set(base._REGISTRY) == set(base.METHOD_MODULES)


def test_unknown_method_is_a_clear_error():
    with pytest.raises(GraphpruneError, match="unknown pruning method 'nope'; choose one of"):
        base.get_method("nope")


def test_config_naming_an_unknown_method_is_a_clear_error():
    import yaml

    from graphprune.config import config_from_dict

    config = yaml.safe_load(open("config.yaml"))
    config["experiments"]["digits-resnet20"]["methods"] = ["l1_uniform", "magic"]
    with pytest.raises(GraphpruneError, match=r"experiments.digits-resnet20.methods: unknown method 'magic'"):
        config_from_dict(config)


def test_search_priority_names_real_methods_and_puts_the_long_searches_first():
    from graphprune.methods.index import SEARCH_PRIORITY, search_priority

    assert set(SEARCH_PRIORITY) <= set(base.METHOD_MODULES)
    assert search_priority("amc") > search_priority("gnnrl") > search_priority("l1_ratio_search") > 0
    assert search_priority("l1_uniform") == 0  # one-shot heuristics: as short as a fine-tuning


# ------------------------------------------------------------------------------------------ channel importances


def test_every_indexed_importance_is_registered_and_the_other_way_round():
    from graphprune.methods import importance, index

    assert set(importance.IMPORTANCES) == set(index.IMPORTANCE_NAMES)


def test_unknown_importance_is_a_clear_error():
    from graphprune.methods.importance import get_importance

    with pytest.raises(GraphpruneError, match="unknown channel importance 'taylor'; known: filter_l1"):
        get_importance("taylor")
    with pytest.raises(GraphpruneError, match=r"gat_ppo.policy: prior_score must be one of .*consumer_l1.*got .taylor."):
        base.get_method("gat_ppo").parse_settings({"policy": {"prior_score": "taylor"}})


def test_a_new_importance_needs_its_function_and_one_index_line(monkeypatch):
    """Register a score the package does not know (the channel index, reversed: keep the first channels) and
    add its name to the index, nothing else: gat_ppo's prior and repair and a ratio search then rank by it."""
    import numpy as np
    import torch
    from conftest import self_labelled_search
    from torch import nn

    from graphprune.methods import importance, index
    from graphprune.methods.gat_ppo import repair_scores
    from graphprune.methods.heuristics import RatioSearch

    monkeypatch.setattr(importance, "IMPORTANCES", dict(importance.IMPORTANCES))
    monkeypatch.setattr(index, "IMPORTANCE_NAMES", (*index.IMPORTANCE_NAMES, "first_channels"))

    @importance.register_importance("first_channels")
    def first_channels(model, groups):
        return [np.arange(size, 0, -1, dtype=np.float64) for size in groups.sizes]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                          nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    groups, cost, evaluator, graph = self_labelled_search(model, torch.randn(64, 1, 6, 6), calibration_images=32)
    context = base.MethodContext(model, groups, cost, graph, evaluator)

    settings = base.get_method("gat_ppo").parse_settings({"policy": {"prior_score": "first_channels"}})
    assert settings.policy.prior_score == "first_channels"
    for scores in repair_scores(context, "first_channels"):
        assert (np.diff(scores) < 0).all() and scores.mean() == pytest.approx(1.0)  # divided by the group mean

    class FirstChannelsRatioSearch(RatioSearch):
        importance = "first_channels"

    keep = FirstChannelsRatioSearch().channel_chooser(context)
    mask = keep(np.array([2, 3]), np.random.default_rng(0))
    assert [list(kept) for kept in mask.kept] == [[0, 1], [0, 1, 2]]


# ------------------------------------------------------------------------------------------ resource metrics


def kept_channels_price(cost, counts):
    """A metric the package does not know: channels kept over all groups (the test's own price)."""
    return float(counts.sum())


def test_every_metric_names_a_price_that_exists():
    from graphprune.network.budget import METRICS
    from graphprune.network.cost import _price

    for name, metric in METRICS.items():
        assert callable(_price(name)) and metric.column == f"{name}_ratio"
    with pytest.raises(GraphpruneError, match="unknown cost metric 'energy'; use one of flops, params, latency"):
        _price("energy")


def test_a_new_metric_needs_its_price_and_one_table_line(monkeypatch):
    """Add a metric (its price above, its line in budget.METRICS), nothing else: its targets parse, a cost
    model prices it, a ratio search meets a budget of it and records its ratio."""
    import numpy as np
    import torch
    from conftest import self_labelled_search
    from torch import nn

    from graphprune.network import budget
    from graphprune.search_setup import parse_request

    monkeypatch.setitem(budget.METRICS, "channels", budget.ResourceMetric(
        "channels", "channels", "channels kept over all groups", False, False, f"{__name__}:kept_channels_price"))
    request = parse_request("l1_ratio_search", "channels0.5")
    assert (request.budget.metric, request.budget.ratio) == ("channels", 0.5)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                          nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    groups, cost, evaluator, graph = self_labelled_search(model, torch.randn(64, 1, 6, 6), calibration_images=32)
    assert cost.ratio("channels", np.array([3, 4])) == pytest.approx(7 / 14)
    context = base.MethodContext(model, groups, cost, graph, evaluator, evaluations=8)
    record = request.method.search(context, request.budget, request.settings).record
    assert 0 < record["channels_ratio"] <= 0.5 and "flops_ratio" in record


# ------------------------------------------------------------------------------------------ methods


def test_a_new_method_needs_its_file_and_one_index_line(monkeypatch):
    """A method the package does not know (keep the first channels of every group, at the largest uniform ratio
    that meets the budget), registered in its own module (this one) plus its line in methods/index.py,
    nothing else: a config names it and its variants, the search builder parses it, and it prunes to budget."""
    import numpy as np
    import torch
    from conftest import self_labelled_search
    from test_config import minimal_config
    from torch import nn

    from graphprune.config import config_from_dict
    from graphprune.methods import index
    from graphprune.network.pruning import Mask
    from graphprune.search_setup import parse_request

    monkeypatch.setitem(index.METHOD_MODULES, "first_channels", __name__)
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))

    @base.register("first_channels")
    class FirstChannels(base.PruningMethod):
        def choose(self, context, budget, settings):
            counts = base.largest_scaled_counts(context.cost, budget, np.ones(len(context.groups)))
            kept = tuple(tuple(range(int(c))) for c in counts)
            return base.MethodResult(Mask(context.groups.sizes, kept), {"notes": "first channels"})

    config = config_from_dict(minimal_config(methods=["first_channels", "first_variant"],
                                             variants={"first_variant": {"method": "first_channels"}}))
    assert config.experiment("exp").base_method("first_variant") == "first_channels"
    request = parse_request("first_channels", "flops0.5")
    with pytest.raises(GraphpruneError, match="settings of first_channels"):
        parse_request("first_channels", "flops0.5", {"ratio": 0.3})  # it takes no settings

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                          nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    groups, cost, evaluator, graph = self_labelled_search(model, torch.randn(64, 1, 6, 6), calibration_images=32)
    result = request.method.search(base.MethodContext(model, groups, cost, graph, evaluator), request.budget,
                                   request.settings)
    assert result.record["method"] == "first_channels" and 0 < result.record["flops_ratio"] <= 0.5
    assert all(list(kept) == list(range(len(kept))) for kept in result.mask.kept)
