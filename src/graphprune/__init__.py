"""graphprune: resource-aware channel pruning of CNNs with graph-based reinforcement learning.

The Python API (`graphprune.api`): `prune`, `finetune`, `save`, `load`, `PruneData`, `load_data`. They are
imported on first use, so `import graphprune.config` (Snakemake, the CLI's start-up) does not pay for torch.
"""

__version__ = "0.1.0"

_API = ("prune", "finetune", "save", "load", "PruneData", "PruneResult", "load_data")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from graphprune import api

        return getattr(api, name)
    raise AttributeError(f"module 'graphprune' has no attribute {name!r}")
