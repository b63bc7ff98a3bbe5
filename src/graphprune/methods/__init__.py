"""Every way to choose a keep-mask under a resource budget, behind one interface (`PruningMethod.search`).

Find a method by name with `get_method("l1_uniform")`; `available_methods()` lists them. The interface, the
registry and the shared budget arithmetic are in `base`; the heuristics in `heuristics`; the RL methods in
their own modules, indexed by name in `base.METHOD_MODULES`.
"""

from graphprune.methods.base import (
    MethodContext,
    MethodResult,
    PruningMethod,
    available_methods,
    get_method,
    register,
)

__all__ = ["MethodContext", "MethodResult", "PruningMethod", "available_methods", "get_method", "register"]
