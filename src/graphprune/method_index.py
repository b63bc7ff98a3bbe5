"""The pruning methods by name, without importing them: the index of the registry in `graphprune.methods`.

Listing or checking method names (the config code, Snakemake, `--help`) must not pay for torch, torch-geometric
and Tianshou, so the index lives outside the `graphprune.methods` package, whose `__init__` imports torch.
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
    "l1_ratio_search": "graphprune.methods.heuristics",
}


# Distinct masks a search method may score when the config or caller does not say (`search.evaluations`).
DEFAULT_EVALUATIONS = 512


def available_methods() -> list[str]:
    return sorted(METHOD_MODULES)
