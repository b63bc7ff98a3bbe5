"""What the RL searches share: for the per-group-ratio baselines (`gnnrl`, `amc`) a mask from kept counts per
group (the best channels of each group by a fixed score), its search accuracy, the best feasible mask found so
far, and a seeded scope for the global random generators that Tianshou draws from; for every RL search
(`gat_ppo` too) the cap on episodes per evaluation.

Nothing here learns, and nothing here scores a mask over the budget.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from graphprune.methods.base import keep_top
from graphprune.network.cost import Budget, CostModel
from graphprune.network.pruning import Mask

# A converged policy repeats masks, which cost no evaluation: this bounds a search that stops finding new ones.
MAX_EPISODES_PER_EVALUATION = 4


class ScoredMasks:
    """Masks from kept counts, scored on the search split; remembers the best (the first found wins ties).

    channel_scores: one array per group, [size] each; group g keeps its `counts[g]` highest-scoring channels.
    """

    def __init__(self, cost: CostModel, budget: Budget, channel_scores: Sequence[np.ndarray],
                 evaluator: Callable[[Mask], float]):
        self.cost, self.budget, self.evaluator = cost, budget, evaluator
        self.channel_scores = [np.asarray(s, dtype=np.float64) for s in channel_scores]
        self.best_mask: Mask | None = None
        self.best_accuracy = -np.inf
        self.accuracies: list[float] = []  # one per call, in order

    def mask(self, counts: Sequence[int] | np.ndarray) -> Mask:
        return keep_top(self.channel_scores, [int(c) for c in counts])

    def score(self, counts: Sequence[int] | np.ndarray) -> float:
        """Search accuracy (in [0, 1]) of the mask keeping `counts`, which must meet the budget."""
        if not self.cost.meets(self.budget, counts):
            raise ValueError(f"counts {list(counts)} exceed the budget {self.budget}; only feasible masks are scored")
        mask = self.mask(counts)
        accuracy = float(self.evaluator(mask))  # raises EvaluationBudgetExhausted once the budget is spent
        self.accuracies.append(accuracy)
        if accuracy > self.best_accuracy:
            self.best_mask, self.best_accuracy = mask, accuracy
        return accuracy

    @property
    def exhausted(self) -> bool:
        """True once the search's evaluations are spent (the evaluator is a BudgetedEvaluator)."""
        return bool(getattr(self.evaluator, "exhausted", False))

    def best_keep_ratios(self) -> list[float]:
        """Kept fraction per group of the best mask, rounded for the record."""
        if self.best_mask is None:
            return []
        return [round(c / s, 4) for c, s in zip(self.best_mask.counts, self.best_mask.sizes, strict=True)]


@contextlib.contextmanager
def preserved_global_rngs() -> Iterator[None]:
    """Put torch's (CPU), numpy's and Python's global generators back as they were after the block, whatever
    it seeded or drew: a search leaves the caller's random streams untouched."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed torch's and numpy's global generators for the block and restore them afterwards.

    Tianshou samples actions from torch's global generator and minibatches from numpy's, so seeding them is
    what makes a search reproducible; restoring them leaves the caller's random streams untouched.
    """
    with preserved_global_rngs():
        torch.manual_seed(seed)
        np.random.seed(seed)
        yield
