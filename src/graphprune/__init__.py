"""graphprune: resource-aware channel pruning of CNNs with graph-based reinforcement learning.

The Python API (`graphprune.api`): `prune`, `finetune`, `save`, `load`, `PruneData`, `load_data`. They are
imported on first use, so `import graphprune.config` (Snakemake, the CLI's start-up) does not pay for torch.
"""

import warnings

__version__ = "0.1.0"

# torch-geometric calls torch.jit.script at import, which torch 2.15 answers with a FutureWarning on every run:
# noise a user can do nothing about (only this message is silenced).
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

_API = ("prune", "finetune", "save", "load", "PruneData", "PruneResult", "load_data")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from graphprune import api

        return getattr(api, name)
    raise AttributeError(f"module 'graphprune' has no attribute {name!r}")
