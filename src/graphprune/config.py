"""Load and validate config.yaml into typed objects.

The JSON schema next to this file (`config.schema.yaml`, also used by Snakemake's `validate`) is the one
source of truth for keys, types and defaults: validation fills the defaults in, so the dataclasses built
here take complete sections and define no defaults of their own. Configuration errors become one
GraphpruneError naming the key path. This module does not load data or build models, and imports no torch.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import best_match

# Only torch-free modules: Snakemake imports this module to read the config (tests/test_imports.py).
from graphprune.atomic import atomic_write_text
from graphprune.data.datasets import DatasetInfo, DatasetSettings, dataset_info
from graphprune.errors import GraphpruneError
from graphprune.methods.index import available_methods
from graphprune.methods.settings import parse_settings, settings_type_of
from graphprune.models.spec import ModelSpec
from graphprune.network.budget import METRICS, parse_target
from graphprune.paths import ResultPaths, agent_path
from graphprune.recipe import TrainRecipe

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
# The environment variable naming the default config file of the CLI (the pipeline sets it for its jobs).
CONFIG_FILE_VARIABLE = "GRAPHPRUNE_CONFIG_FILE"
# Settings that say where data lives, not what it is: moving a dataset must not invalidate results.
LOCATION_KEYS = ("root", "download")


@dataclass(frozen=True)
class SearchSettings:
    """The `search` section of an experiment: shared by every method (see the schema for meanings)."""

    min_channels: int
    search_images: int | None
    evaluations: int  # distinct masks every search method may score
    reselect_candidates: int  # best masks rescored on held-out search images after a search (0: off)
    reselect_images: int | None  # search-split images kept for that rescoring (None: a third of the split)
    recalibrate_bn: bool
    calibration_batches: int
    calibration_batch_size: int
    latency: Mapping[str, Any]  # what latency<ratio> targets time: batch_size, device, grid, cache_dir
    methods: Mapping[str, Mapping[str, Any]]  # method name -> its own settings


@dataclass(frozen=True)
class Variant:
    """A named method variant: registry method `method` with `settings` merged over its configured ones."""

    method: str
    settings: Mapping[str, Any]
    evaluations: int | None = None  # distinct masks it may score; None: the experiment's search.evaluations


@dataclass(frozen=True)
class Experiment:
    """One experiment: a dataset, a model, how to train it, and how to prune and fine-tune it.

    `seed` trains the baseline; every (method, target) is searched and fine-tuned once per entry of `seeds`.
    `methods` holds registry names and variant names alike: a variant runs as a method of its own."""

    name: str
    seed: int
    seeds: tuple[int, ...]
    dataset: DatasetSettings
    model: ModelSpec  # classes, channels and input size follow the dataset
    pretrain: TrainRecipe
    targets: tuple[str, ...]
    methods: tuple[str, ...]
    variants: Mapping[str, Variant]
    search: SearchSettings
    finetune: TrainRecipe

    def runs(self) -> list[tuple[str, str, int]]:
        """Every (method, target, seed) the pipeline searches and fine-tunes, in config order."""
        return [(method, target, seed) for method in self.methods for target in self.targets for seed in self.seeds]

    def base_method(self, method: str) -> str:
        """The registry name behind a method or variant name."""
        return self.variants[method].method if method in self.variants else method

    def method_settings(self, method: str) -> dict[str, Any]:
        """Settings of a method or variant: search.methods.<base>, with a variant's own settings merged over."""
        settings = copy.deepcopy(dict(self.search.methods.get(self.base_method(method), {})))
        if method in self.variants:
            settings = _merged(settings, self.variants[method].settings)
        return settings

    def evaluations(self, method: str) -> int:
        """Distinct masks a method or variant may score: its variant's own `evaluations`, else search.evaluations."""
        own = self.variants[method].evaluations if method in self.variants else None
        return own if own is not None else self.search.evaluations

    def search_hash(self, method: str, seed: int) -> str:
        """Changes exactly when a method's masks would change (baseline, shared search settings, its own, seed)."""
        # The latency settings count only where a target is a measured (latency) budget: others never read them.
        uses_latency = any(METRICS[parse_target(target).metric].measured for target in self.targets)
        shared = {k: v for k, v in asdict(self.search).items() if k != "methods" and (k != "latency" or uses_latency)}
        shared["evaluations"] = self.evaluations(method)
        base = self.base_method(method)
        return stable_hash({"baseline": self.pretrain_hash, "search": shared, "method": base,
                            "settings": resolved_settings(base, self.method_settings(method)), "seed": seed})

    def finetune_hash(self, method: str, seed: int) -> str:
        return stable_hash({"search": self.search_hash(method, seed), "finetune": asdict(self.finetune)})

    @property
    def dataset_info(self) -> DatasetInfo:
        return dataset_info(self.dataset)

    @property
    def pretrain_hash(self) -> str:
        """Changes exactly when the pretrained baseline would change."""
        dataset = {k: v for k, v in asdict(self.dataset).items() if k not in LOCATION_KEYS}
        return stable_hash(
            {"seed": self.seed, "dataset": dataset, "model": self.model.to_dict(), "pretrain": asdict(self.pretrain)}
        )


@dataclass(frozen=True)
class AgentTraining:
    """One shared agent (config `agents.<name>`): trained on every (experiment, budget) pair, `iterations` PPO
    iterations each, round-robin; `settings` are gat_ppo's (AgentSettings), the budget prior on by default."""

    name: str
    experiments: tuple[str, ...]
    budgets: tuple[str, ...]
    iterations: int
    seed: int
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class Config:
    source: str  # where the config came from, for messages
    results_dir: str
    device: str
    experiments: Mapping[str, Experiment]
    logs_dir: str = "logs"
    agents: Mapping[str, AgentTraining] = field(default_factory=dict)

    def experiment(self, name: str) -> Experiment:
        if name not in self.experiments:
            raise GraphpruneError(
                f"{self.source}: no experiment '{name}'; known experiments: {', '.join(self.experiments)}"
            )
        return self.experiments[name]

    def paths(self, experiment: str) -> ResultPaths:
        return ResultPaths(self.results_dir, experiment, self.logs_dir)

    def agent(self, name: str) -> AgentTraining:
        if name not in self.agents:
            raise GraphpruneError(f"{self.source}: no agent '{name}'; known agents: {', '.join(self.agents) or 'none'}")
        return self.agents[name]

    def agent_file(self, agent: str) -> str:
        """The agent.pt a `gat_ppo_transfer` setting names: a configured agent's, or the path itself."""
        return agent_path(self.results_dir, agent) if agent in self.agents else agent

    def agent_inputs(self, name: str) -> tuple[list[str], list[str]]:
        """(baseline models, graphs) of the experiments the agent `name` trains on: the train_agent rule's inputs."""
        paths = [self.paths(e) for e in self.agent(name).experiments]
        return [p.baseline_model() for p in paths], [p.graph() for p in paths]

    def transfer_agent_files(self, experiment: str, method: str) -> list[str]:
        """The agent.pt a gat_ppo_transfer search reads (none for other methods): a search rule's input."""
        found = self.experiment(experiment)
        if found.base_method(method) != "gat_ppo_transfer":
            return []
        return [self.agent_file(found.method_settings(method)["agent"])]

    def training_hash(self, name: str) -> str:
        """Changes exactly when the agent `name` would train differently (its networks, budgets, settings)."""
        agent = self.agent(name)
        return stable_hash({"baselines": [self.experiment(e).pretrain_hash for e in agent.experiments],
                            "search": [asdict(self.experiment(e).search) for e in agent.experiments],
                            "budgets": agent.budgets, "iterations": agent.iterations, "seed": agent.seed,
                            "settings": resolved_settings("gat_ppo", agent.settings)})

    def runs(self) -> list[tuple[str, str, str, int]]:
        """Every (experiment, method, target, seed) the pipeline searches and fine-tunes, in config order."""
        return [(name, *run) for name, experiment in self.experiments.items() for run in experiment.runs()]


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise GraphpruneError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise GraphpruneError(f"{path} is not valid YAML: {exc}") from exc
    return config_from_dict(data, source=str(path))


def config_from_dict(data: Any, source: str = "config") -> Config:
    """Validate a config mapping (a copy; the input is left as it is) and build the typed Config."""
    data = validate(data, "#", source)
    experiments = {name: _experiment(name, raw) for name, raw in data["experiments"].items()}
    agents = {name: _agent(name, raw, experiments) for name, raw in data["agents"].items()}
    _check_transfer_agents(experiments, agents)
    return Config(source, data["results_dir"], data["device"], experiments, data["logs_dir"], agents)


def train_recipe(raw: Mapping[str, Any], source: str = "train recipe") -> TrainRecipe:
    """A TrainRecipe from a (possibly partial) recipe section, schema defaults filled in."""
    return TrainRecipe.from_dict(validate(raw, "#/$defs/train_recipe", source))


def finetune_recipe(overrides: Mapping[str, Any], source: str = "finetune") -> TrainRecipe:
    """The pipeline's fine-tuning recipe (the schema's default of an experiment's `finetune`: the one source of
    its defaults) with `overrides` applied: what `graphprune.finetune` and `graphprune prune` train with."""
    default = _load_schema()["$defs"]["experiment"]["properties"]["finetune"]["default"]
    return train_recipe({**default, **overrides}, source)


def dataset_settings(raw: Mapping[str, Any], source: str = "dataset") -> DatasetSettings:
    """DatasetSettings from a (possibly partial) dataset section, schema defaults filled in; an unknown name
    is an error that names `source` (the names are datasets.DATASETS, not a schema enum)."""
    settings = DatasetSettings(**validate(raw, "#/$defs/dataset", source))
    _known_dataset(settings, f"{source}: name")
    return settings


def _known_dataset(settings: DatasetSettings, where: str) -> DatasetInfo:
    try:
        return dataset_info(settings)
    except GraphpruneError as error:
        raise GraphpruneError(f"{where}: {error}") from None


def search_settings(raw: Mapping[str, Any], source: str = "search") -> dict[str, Any]:
    """A `search` section (possibly partial) with the schema defaults filled in, as a plain mapping."""
    return validate(raw, "#/$defs/search", source)


def validate(data: Any, definition: str, source: str) -> Any:
    """Check `data` against the schema part `definition` ("#" for a whole config); return a copy with
    the defaults filled in. The most relevant error is raised as a GraphpruneError."""
    data = copy.deepcopy(data)
    schema = _load_schema()
    if definition != "#":
        schema = {"$ref": definition, "$defs": schema["$defs"]}
    error = best_match(_DefaultFillingValidator(schema).iter_errors(data))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path)
        raise GraphpruneError(f"{source}: {where + ': ' if where else ''}{error.message}")
    return data


def resolved_settings(base_method: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting of a method as it will run, defaults filled in: what result hashes take, so that a changed
    default reruns the searches it changes and spelling out a default reruns nothing."""
    return asdict(parse_settings(settings_type_of(base_method), settings, f"settings of {base_method}"))


def stable_hash(data: Any) -> str:
    """A short hash of JSON-able data that does not depend on key order or the Python session."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_resolved_config(data: Mapping[str, Any], directory: str | Path) -> str:
    """Write a validated config to `directory/config-<hash>.yaml` and return that path.

    Snakemake merges config.yaml, --configfile and --config overrides in memory; the rules hand the CLI
    this file so it sees exactly the config the workflow was planned with.
    """
    resolved = validate(data, "#", "config")
    text = yaml.safe_dump(resolved, sort_keys=True)
    path = Path(directory) / f"config-{stable_hash(resolved)}.yaml"
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(text, path)
    return str(path)


def _experiment(name: str, raw: Mapping[str, Any]) -> Experiment:
    dataset = DatasetSettings(**raw["dataset"])
    info = _known_dataset(dataset, f"experiments.{name}.dataset.name")
    model = ModelSpec(
        name=raw["model"]["name"],
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        input_size=info.input_size,
        weights=raw["model"]["weights"],
    )
    variants = {variant: Variant(spec["method"], spec["settings"], spec["evaluations"])
                for variant, spec in raw["variants"].items()}
    _check_methods(name, raw["methods"], raw["search"]["methods"], variants)
    for index, target in enumerate(raw["targets"]):
        try:
            parse_target(target)
        except GraphpruneError as exc:
            raise GraphpruneError(f"experiments.{name}.targets.{index}: {exc}") from exc
    seeds = tuple(raw["seeds"]) if raw["seeds"] is not None else (raw["seed"],)
    experiment = Experiment(
        name, raw["seed"], seeds, dataset, model, TrainRecipe.from_dict(raw["pretrain"]), tuple(raw["targets"]),
        tuple(raw["methods"]), variants, SearchSettings(**raw["search"]), TrainRecipe.from_dict(raw["finetune"]),
    )
    _check_method_settings(experiment)
    return experiment


def _agent(name: str, raw: Mapping[str, Any], experiments: Mapping[str, Experiment]) -> AgentTraining:
    where = f"agents.{name}"
    for index, experiment in enumerate(raw["experiments"]):
        if experiment not in experiments:
            raise GraphpruneError(f"{where}.experiments.{index}: no experiment {experiment!r}; known experiments: "
                                  f"{', '.join(experiments)}")
    for index, budget in enumerate(raw["budgets"]):
        try:
            parse_target(budget)
        except GraphpruneError as exc:
            raise GraphpruneError(f"{where}.budgets.{index}: {exc}") from exc
    agent = AgentTraining(name, tuple(raw["experiments"]), tuple(raw["budgets"]), raw["iterations"], raw["seed"],
                          raw["settings"])
    settings = parse_settings(settings_type_of("gat_ppo"), agent.settings, f"{where}.settings")
    if not settings.policy.budget_prior:
        raise GraphpruneError(f"{where}.settings.policy.budget_prior: a shared agent needs the budget prior (without "
                              "it the keep logits start at one budget's bias)")
    return agent


def _check_transfer_agents(experiments: Mapping[str, Experiment], agents: Mapping[str, AgentTraining]) -> None:
    """Every gat_ppo_transfer method names a configured agent or an agent.pt file."""
    for experiment in experiments.values():
        for method in experiment.methods:
            if experiment.base_method(method) != "gat_ppo_transfer":
                continue
            agent = experiment.method_settings(method).get("agent", "")
            if agent not in agents and not agent.endswith(".pt"):
                where = (f"experiments.{experiment.name}.variants.{method}.settings.agent" if method in experiment.variants
                         else f"experiments.{experiment.name}.search.methods.gat_ppo_transfer.agent")
                raise GraphpruneError(f"{where}: {agent!r} is neither an agent of this config ("
                                      f"{', '.join(agents) or 'none'}) nor the path of an agent.pt")


def _check_method_settings(experiment: Experiment) -> None:
    """Parse every method's and variant's settings into their typed form now, so that a wrong nested key or value
    fails when the config is loaded (before any job runs), naming its key path."""
    prefix = f"experiments.{experiment.name}"
    for method in {*experiment.search.methods, *experiment.methods, *experiment.variants}:
        base = experiment.base_method(method)
        where = (f"{prefix}.variants.{method}.settings (over search.methods.{base})" if method in experiment.variants
                 else f"{prefix}.search.methods.{method}")
        parse_settings(settings_type_of(base), experiment.method_settings(method), where)


def _check_methods(experiment: str, methods: list[str], settings: Mapping[str, Any],
                   variants: Mapping[str, Variant]) -> None:
    """Method names must be in the registry (one source of truth, so the schema does not repeat the list) or
    name a variant of a registered method; a variant may not shadow a registered name."""
    known = available_methods()
    where_prefix = f"experiments.{experiment}"
    for variant, spec in variants.items():
        if variant in known:
            raise GraphpruneError(f"{where_prefix}.variants.{variant}: a variant may not take the name of a "
                                  "registered method; rename it")
        if spec.method not in known:
            raise GraphpruneError(f"{where_prefix}.variants.{variant}.method: unknown method {spec.method!r}; "
                                  f"choose from {', '.join(known)}")
    for where, names, allowed in (("methods", methods, [*known, *variants]), ("search.methods", list(settings), known)):
        unknown = [m for m in names if m not in allowed]
        if unknown:
            raise GraphpruneError(
                f"{where_prefix}.{where}: unknown method {unknown[0]!r}; choose from {', '.join(allowed)}"
            )


def _merged(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `update` written over it; nested mappings are merged key by key, not replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(dict(merged[key]), value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@functools.cache
def _load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _fill_defaults(validator, properties, instance, schema):
    # As Snakemake's validate does (jsonschema FAQ recipe), but copying each default so that no two
    # configs share, and later mutate, the schema's own default objects.
    if isinstance(instance, dict):
        for name, subschema in properties.items():
            if "default" in subschema:
                instance.setdefault(name, copy.deepcopy(subschema["default"]))
    yield from Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)


_DefaultFillingValidator = validators.extend(Draft202012Validator, {"properties": _fill_defaults})
