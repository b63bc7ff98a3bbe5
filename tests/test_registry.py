"""The method registry's index (name -> module) and the modules agree."""

import importlib

import pytest

from graphprune.errors import GraphpruneError
from graphprune.methods import base
from graphprune.methods.settings import METHOD_SETTINGS


@pytest.mark.parametrize("name", sorted(base.METHOD_MODULES))
def test_every_indexed_method_registers_under_its_name(name):
    method = base.get_method(name)
    assert method.name == name
    assert isinstance(method, base.PruningMethod)
    assert method.settings_type is METHOD_SETTINGS[name]  # the config checks settings with this table


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
