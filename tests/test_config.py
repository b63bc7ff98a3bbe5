import functools
import os
import re

import pytest
from snakemake.utils import validate as snakemake_validate

from graphprune.config import (
    SCHEMA_PATH,
    config_from_dict,
    load_config,
    stable_hash,
    validate,
    write_resolved_config,
)
from graphprune.errors import GraphpruneError
from graphprune.methods.settings import METHOD_SETTINGS
from graphprune.models import ModelSpec


def minimal_config(**experiment_changes):
    experiment = {"dataset": {"name": "digits"}, "model": {"name": "resnet20"}, "pretrain": {"epochs": 3}}
    return {"experiments": {"exp": {**experiment, **experiment_changes}}}


def test_every_shipped_config_loads_with_typed_method_settings(repo_root):
    """A typo in a variant of configs/*.yaml fails here, not hours into `make bench`."""
    paths = [repo_root / "config.yaml", *sorted((repo_root / "configs").glob("*.yaml"))]
    assert len(paths) > 5
    for path in paths:
        config = load_config(path)  # parses every method's and variant's settings into their types
        for experiment in config.experiments.values():
            assert {experiment.base_method(m) for m in experiment.methods} <= set(METHOD_SETTINGS), path.name


def test_default_config_loads_with_defaults_filled(repo_root):
    config = load_config(repo_root / "config.yaml")
    assert (config.results_dir, config.device) == ("results", "auto")
    experiment = config.experiment("digits-resnet20")
    assert experiment.model == ModelSpec("resnet20", num_classes=10, in_channels=1, input_size=8)
    assert experiment.dataset.root == "data" and experiment.dataset.search_size == 300
    assert experiment.pretrain.momentum == 0.9 and experiment.pretrain.milestones == ()


def test_package_and_snakemake_read_the_same_schema_and_fill_the_same_defaults(repo_root):
    workflow_schema = repo_root / "workflow" / "schemas" / "config.schema.yaml"
    assert os.path.islink(workflow_schema) and os.path.samefile(workflow_schema, SCHEMA_PATH)
    by_snakemake = minimal_config()
    snakemake_validate(by_snakemake, schema=str(workflow_schema))
    assert validate(minimal_config(), "#", "config") == by_snakemake
    assert by_snakemake["experiments"]["exp"]["pretrain"]["batch_size"] == 128


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset": {"name": "foo"}},
         "experiments.exp.dataset.name: unknown dataset 'foo'; known datasets: digits, cifar10, cifar100"),
        ({"pretrain": {"epochs": 3, "lr": -1}}, "experiments.exp.pretrain.lr: -1 is less than or equal to"),
        ({"pretrain": {"lr": 0.1}}, "experiments.exp.pretrain: 'epochs' is a required property"),
        ({"pretrain": {"epochs": 3, "epoch": 4}},
         "experiments.exp.pretrain: Additional properties are not allowed ('epoch' was unexpected)"),
        ({"pretrain": {"epochs": 3, "schedule": "linear"}}, "'linear' is not one of ['cosine', 'step']"),
        ({"search": {"methods": {"gat_ppo": {"policy": {"encoder": "gta"}}}}},
         "experiments.exp.search.methods.gat_ppo.policy: encoder must be one of ('gat', 'mlp'"),
        ({"search": {"methods": {"amc": {"warmup": 3}}}},
         "experiments.exp.search.methods.amc: unknown setting(s) warmup; it accepts: actor_lr"),
        ({"methods": ["wide"], "variants": {"wide": {"method": "gat_ppo", "settings": {"reward": {"kind": "x"}}}}},
         "experiments.exp.variants.wide.settings (over search.methods.gat_ppo).reward: reward kind must be one of"),
        ({"targets": ["energy0.5"]}, "experiments.exp.targets.0: malformed budget target 'energy0.5'"),
    ],
)
def test_bad_config_names_the_key(changes, message):
    with pytest.raises(GraphpruneError, match=re.escape(message)):
        config_from_dict(minimal_config(**changes))


def test_input_is_not_modified():
    data = minimal_config()
    config_from_dict(data)
    assert data == minimal_config()


def test_unknown_experiment_lists_the_known_ones():
    with pytest.raises(GraphpruneError, match="no experiment 'other'; known experiments: exp"):
        config_from_dict(minimal_config()).experiment("other")


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(GraphpruneError, match="absent.yaml does not exist"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("experiments: [unclosed")
    with pytest.raises(GraphpruneError, match="broken.yaml is not valid YAML"):
        load_config(broken)


def test_pretrain_hash_tracks_what_changes_the_baseline():
    def pretrain_hash(**changes):
        return config_from_dict(minimal_config(**changes)).experiment("exp").pretrain_hash

    base = pretrain_hash()
    assert base == pretrain_hash(pretrain={"epochs": 3, "momentum": 0.9})  # an explicit default
    assert base == pretrain_hash(dataset={"name": "digits", "root": "/elsewhere", "download": True})
    assert base != pretrain_hash(pretrain={"epochs": 4})
    assert base != pretrain_hash(seed=1)
    assert base != pretrain_hash(model={"name": "resnet56"})
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})


def test_resolved_config_round_trips(tmp_path):
    path = write_resolved_config(minimal_config(), tmp_path)
    assert write_resolved_config(minimal_config(), tmp_path) == path
    assert load_config(path) == config_from_dict(minimal_config(), source=path)


def test_logs_dir_keeps_the_logs_of_configs_sharing_an_experiment_name_apart(repo_root):
    default = config_from_dict(minimal_config())
    assert default.logs_dir == "logs"
    assert default.paths("exp").log("search", "gat_ppo", "flops0.5", 0) == "logs/exp/gat_ppo/flops0.5/seed0/search.log"
    separate = config_from_dict({**minimal_config(), "logs_dir": "logs/bench"})
    assert separate.paths("exp").log("pretrain") == "logs/bench/exp/pretrain.log"
    assert separate.paths("exp").benchmark("pretrain") == "logs/bench/exp/pretrain.benchmark.tsv"
    assert load_config(repo_root / "configs/fashion-resnet20.yaml").logs_dir == "logs/bench"


def test_search_hash_follows_the_settings_a_search_runs_with_not_how_they_are_spelled(monkeypatch):
    """Defaults count: spelling one out changes no hash, a changed default changes the hashes it reaches."""
    from graphprune.methods import settings as method_settings

    def search_hash(settings):
        variants = {"agent": {"method": "gat_ppo", "settings": settings}}
        return config_from_dict(minimal_config(methods=["agent"], variants=variants)).experiment("exp") \
            .search_hash("agent", 0)

    default = search_hash({})
    assert search_hash({"eps_clip": method_settings.AgentSettings().eps_clip, "policy": {"budget_prior": True}}) == default
    assert search_hash({"eps_clip": 0.2}) != default
    amc = config_from_dict(minimal_config(methods=["amc"])).experiment("exp").search_hash("amc", 0)
    monkeypatch.setattr(method_settings.AgentSettings, "__init__", functools.partialmethod(
        method_settings.AgentSettings.__init__, update_repeats=99))  # as if the default had changed
    assert search_hash({}) != default
    assert config_from_dict(minimal_config(methods=["amc"])).experiment("exp").search_hash("amc", 0) == amc


def test_a_variant_may_have_its_own_evaluation_budget():
    experiment = config_from_dict(minimal_config(
        methods=["amc", "amc_k16"], variants={"amc_k16": {"method": "amc", "evaluations": 16}},
        search={"evaluations": 64})).experiment("exp")
    assert (experiment.evaluations("amc"), experiment.evaluations("amc_k16")) == (64, 16)
    assert experiment.search_hash("amc", 0) != experiment.search_hash("amc_k16", 0)
    same = config_from_dict(minimal_config(methods=["amc"], search={"evaluations": 16})).experiment("exp")
    assert same.search_hash("amc", 0) == experiment.search_hash("amc_k16", 0)  # only the budget differed
    with pytest.raises(GraphpruneError, match="evaluations"):
        config_from_dict(minimal_config(methods=["amc_k0"], variants={"amc_k0": {"method": "amc", "evaluations": 0}}))


def agents_config(agent=None, transfer_agent="shared"):
    config = minimal_config(methods=["gat_ppo_transfer_k8"], variants={"gat_ppo_transfer_k8": {
        "method": "gat_ppo_transfer", "settings": {"agent": transfer_agent}, "evaluations": 8}})
    config["agents"] = {"shared": {"experiments": ["exp"], "budgets": ["flops0.3", "flops0.5"], **(agent or {})}}
    return config


def test_agents_are_parsed_with_their_settings_and_files():
    config = config_from_dict(agents_config())
    agent = config.agent("shared")
    assert (agent.experiments, agent.budgets, agent.iterations, agent.seed) == (("exp",), ("flops0.3", "flops0.5"), 8, 0)
    assert agent.settings == {}
    assert config.agent_file("shared") == "results/agents/shared/agent.pt"
    assert config.agent_file("elsewhere/agent.pt") == "elsewhere/agent.pt"
    hash_now = config.training_hash("shared")
    assert hash_now == config_from_dict(agents_config()).training_hash("shared")
    assert hash_now != config_from_dict(agents_config({"iterations": 9})).training_hash("shared")
    assert hash_now != config_from_dict(agents_config({"settings": {"lr": 0.01}})).training_hash("shared")


@pytest.mark.parametrize(("agent", "transfer_agent", "message"), [
    ({"experiments": ["nope"]}, "shared", r"agents.shared.experiments.0: no experiment 'nope'"),
    ({"budgets": ["flops2"]}, "shared", r"agents.shared.budgets.0"),
    ({"settings": {"policy": {"budget_prior": False}}}, "shared", "needs the budget prior"),
    ({"settings": {"learning_rate": 0.1}}, "shared", r"agents.shared.settings: unknown setting\(s\) learning_rate"),
    ({}, "unknown", r"variants.gat_ppo_transfer_k8.settings.agent: 'unknown' is neither an agent"),
])
def test_bad_agents_name_the_key(agent, transfer_agent, message):
    with pytest.raises(GraphpruneError, match=message):
        config_from_dict(agents_config(agent, transfer_agent))
