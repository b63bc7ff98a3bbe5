"""Every way to choose a keep-mask under a resource budget, behind one interface (`PruningMethod.search`).

Find a method by name with `get_method("l1_uniform")`; `available_methods()` lists them. The interface, the
registry and the shared budget arithmetic are in `base`; the heuristics in `heuristics`; the RL methods in
their own modules, indexed by name in `index.METHOD_MODULES`. `index` (the names) and `settings` (every
method's settings) are torch-free: the config code and Snakemake read them without importing torch, so this
`__init__` imports only `index` and loads `base` (torch) on first use of the names below.
"""

from graphprune.methods.index import available_methods

_BASE = ("MethodContext", "MethodResult", "PruningMethod", "get_method", "register")
__all__ = ["MethodContext", "MethodResult", "PruningMethod", "available_methods", "get_method", "register"]


def __getattr__(name: str):
    if name in _BASE:
        from graphprune.methods import base

        return getattr(base, name)
    raise AttributeError(f"module 'graphprune.methods' has no attribute {name!r}")
