"""The pruning methods by name, without importing them: the index of the registry in
`graphprune.methods.base`.

Listing or checking method names (the config code, Snakemake, `--help`) must not pay for torch, torch-geometric
and Tianshou, so this module imports nothing, and the package's `__init__` imports only this module.
"""

from __future__ import annotations

# Method name -> the module whose import registers it (`graphprune.methods.base.register`). Looking a name up
# imports only its module.
METHOD_MODULES: dict[str, str] = {
    "random": "graphprune.methods.heuristics",
    "random_search": "graphprune.methods.heuristics",
    "l1_uniform": "graphprune.methods.heuristics",
    "global_bn": "graphprune.methods.heuristics",
    "depgraph": "graphprune.methods.heuristics",
    "gnnrl": "graphprune.methods.gnnrl",
    "amc": "graphprune.methods.amc",
    "gat_ppo": "graphprune.methods.gat_ppo",
    "gat_ppo_transfer": "graphprune.methods.gat_ppo.transfer",
    "l1_ratio_search": "graphprune.methods.heuristics",
    "depgraph_ratio_search": "graphprune.methods.heuristics",
}


# Channel importances by name (`graphprune.methods.importance`, where each registers): what `policy.prior_score`
# and the ratio searches may rank channels by. Listed here so the config checks a name without importing torch.
IMPORTANCE_NAMES: tuple[str, ...] = ("filter_l1", "filter_l2", "bn_gamma", "depgraph", "consumer_l1")


# Scheduling order of search jobs, longest first (methods not listed: 0, as fine-tuning): a local run on few
# cores then starts the long searches early and ends on short jobs, instead of one late AMC search running
# alone (measured in `make run`: 153 s with one of two cores idle).
SEARCH_PRIORITY: dict[str, int] = {"amc": 3, "gat_ppo": 3, "gnnrl": 2, "random_search": 1, "l1_ratio_search": 1,
                                   "depgraph_ratio_search": 1}


def search_priority(method: str) -> int:
    """Snakemake priority of a search job of `method` (a base method name)."""
    return SEARCH_PRIORITY.get(method, 0)


# Distinct masks a search method may score when the config or caller does not say (`search.evaluations`).
DEFAULT_EVALUATIONS = 512


def available_methods() -> list[str]:
    return sorted(METHOD_MODULES)
