"""The one interface of every way to choose a keep-mask under a resource budget, its registry, and the budget
arithmetic all methods share.

A method gets a `MethodContext` (trained model, channel groups, cost model, optional graph and search evaluator,
seed, output folder) and a `Budget`, and returns a `MethodResult`: a mask and a record of the search.
`PruningMethod.search` checks that the budget is feasible before, and that the mask meets it after, so no
method can hand back a mask over budget. Methods register by name (`@register("l1_uniform")`); `get_method`
finds them. This module neither trains, evaluates nor writes files.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from graphprune.errors import GraphpruneError
from graphprune.methods.index import DEFAULT_EVALUATIONS, METHOD_MODULES, available_methods  # noqa: F401 (re-exported)
from graphprune.methods.settings import NoSettings, parse_settings
from graphprune.network.cost import METRICS, Budget, CostModel
from graphprune.network.pruning import ChannelGroups, Mask

# Bisection steps on a continuous scale of keep ratios; 2**-50 is far below one channel of any real network.
_BISECTION_STEPS = 50


@dataclass
class MethodContext:
    """What a method may use to choose a mask. `evaluator(mask)` is the search-split accuracy of the masked
    network (None where no data is at hand: methods that need it refuse to run without it)."""

    model: nn.Module
    groups: ChannelGroups
    cost: CostModel
    graph: Any = None  # graph.NetworkGraph, for the graph-based methods
    evaluator: Callable[[Mask], float] | None = None
    seed: int = 0
    out_dir: Path | None = None
    evaluations: int = DEFAULT_EVALUATIONS  # distinct masks a search method may score (the equal search budget)
    # Held-out search images (`reselect`) that score the search's final choice once more, unbiased by the
    # search's maximum; with `reselect_candidates` > 1 the best few masks by search score are rescored and the
    # best by their pooled score wins (the held-out score counting `reselect_weight`). Part of `evaluations`.
    reselect: Callable[[Mask], float] | None = None
    reselect_candidates: int = 0
    reselect_weight: float = 0.5  # held-out images / (search + held-out images)


class EvaluationBudgetExhausted(Exception):
    """A search asked to score a new mask after its `evaluations` were spent: the method's loop ends there."""


class BudgetedEvaluator:
    """The search evaluator of one search, limited to `limit` distinct masks: the one place where every
    search method's `masks_evaluated` is counted, so equal search budgets hold by construction.

    Scoring a mask seen before is free; a new mask beyond the limit raises EvaluationBudgetExhausted.
    `unmetered` scores without counting, for diagnostics that cannot influence the returned mask.
    """

    def __init__(self, evaluate: Callable[[Mask], float], limit: int,
                 on_new_mask: Callable[[], None] | None = None):
        if limit < 1:
            raise GraphpruneError(f"search.evaluations must be at least 1, got {limit}")
        self.unmetered, self.limit, self.on_new_mask = evaluate, limit, on_new_mask
        self.seen: set[str] = set()
        self.scored: dict[str, tuple[float, Mask]] = {}  # digest -> (search accuracy, mask), for `reselect`

    def __call__(self, mask: Mask) -> float:
        self.charge(mask.key())
        accuracy = float(self.unmetered(mask))
        self.scored[mask.key()] = (accuracy, mask)
        return accuracy

    def charge(self, key: str, mask: Mask | None = None, accuracy: float | None = None) -> None:
        """Count the mask with digest `key` (free when seen before); raise when it would exceed the limit.
        A method that scores through `unmetered` passes the mask and its accuracy, for `reselect`."""
        if mask is not None and accuracy is not None:
            self.scored[key] = (float(accuracy), mask)
        if key not in self.seen:
            if len(self.seen) >= self.limit:
                raise EvaluationBudgetExhausted(f"all {self.limit} evaluations are spent")
            self.seen.add(key)
            if self.on_new_mask is not None:
                self.on_new_mask()

    @property
    def masks_evaluated(self) -> int:
        return len(self.seen)

    @property
    def remaining(self) -> int:
        return self.limit - len(self.seen)

    @property
    def exhausted(self) -> bool:
        return self.remaining <= 0


@dataclass
class MethodResult:
    """The chosen mask and what the search did: `search_seconds`, `masks_evaluated`, `notes`, and the cost ratios
    of the mask (`flops_ratio`, `params_ratio`), plus anything method-specific."""

    mask: Mask
    record: dict[str, Any] = field(default_factory=dict)


class PruningMethod(ABC):
    """Something that returns a mask for (model, budget). Subclasses implement `choose` and declare their
    typed `settings_type` (a dataclass whose fields are the accepted settings, all with defaults)."""

    name: ClassVar[str] = ""  # set by @register
    settings_type: ClassVar[type] = NoSettings
    needs_evaluator: ClassVar[bool] = False  # scores masks on the search split (a search method)
    needs_graph: ClassVar[bool] = False  # reads the network graph (`graphprune graph`, or built by the API)
    draws_progress: ClassVar[bool] = False  # shows its own progress bar (else one counts evaluated masks)

    def search(
        self, context: MethodContext, budget: Budget, settings: Mapping[str, Any] | object | None = None
    ) -> MethodResult:
        """Choose a mask meeting `budget`. `settings`: a mapping of this method's settings (or the typed object).

        Raises GraphpruneError for an impossible budget, unknown settings or a missing search evaluator.
        """
        typed_settings = self.parse_settings(settings)
        context.cost.check_feasible(budget)
        if self.needs_evaluator and context.evaluator is None:
            raise GraphpruneError(
                f"method {self.name} scores masks on the search split and needs a search evaluator; "
                "run it through `graphprune search` with a dataset"
            )
        if self.needs_graph and context.graph is None:
            raise GraphpruneError(f"method {self.name} reads the network graph; build it first (`graphprune graph`)")
        budgeted = progress = None
        reserved = finalists(context) if self.needs_evaluator else 0
        if self.needs_evaluator:  # one-shot methods score nothing: no counter, no empty bar
            if not self.draws_progress:
                # Shown in a pipeline job's log too (not a terminal), redrawn there every 10 s instead of 0.1 s.
                progress = tqdm(total=context.evaluations, desc=f"{self.name} {budget}", unit="mask", leave=False,
                                mininterval=0.1 if sys.stderr.isatty() else 10)
            budgeted = BudgetedEvaluator(context.evaluator, context.evaluations - reserved,
                                         progress and progress.update)
            context = dataclasses.replace(context, evaluator=budgeted)
        start = time.perf_counter()
        try:
            result = self.choose(context, budget, typed_settings)
            rescored = 0
            if reserved:
                result, rescored = reselect(result, budgeted, context, budget, reserved)
                if progress is not None:
                    progress.update(rescored)
        finally:
            if progress is not None:
                progress.close()
        seconds = time.perf_counter() - start
        _check_result(self.name, context, budget, result.mask)
        counts = result.mask.counts
        record = {
            "method": self.name, "target": str(budget), "search_seconds": seconds, "notes": "", **result.record,
            "masks_evaluated": budgeted.masks_evaluated + rescored if budgeted else 0,
            "evaluations": context.evaluations if self.needs_evaluator else 0,
            **{METRICS[metric].column: context.cost.ratio(metric, counts) for metric in context.cost.priced_metrics},
        }
        return MethodResult(result.mask, record)

    def parse_settings(self, settings: Mapping[str, Any] | object | None) -> Any:
        """This method's typed settings from a mapping (or the typed object); a wrong key or value raises a
        GraphpruneError. Callers parse before any expensive work, so a typo fails at once."""
        return parse_settings(self.settings_type, settings, f"settings of {self.name}")

    @abstractmethod
    def choose(self, context: MethodContext, budget: Budget, settings: Any) -> MethodResult:
        """Return a mask meeting `budget` (feasibility is already checked) and the method's own record items.

        `context.evaluator` is a BudgetedEvaluator: a search method scores masks until it is `exhausted`."""


# At most this share of a search's evaluations goes to rescoring finalists (a search of under 8 masks: none).
_FINALIST_SHARE = 8


def finalists(context: MethodContext) -> int:
    """How many finalists a search rescores on held-out images: `reselect_candidates`, at most an eighth of the
    evaluations."""
    if context.reselect is None:
        return 0
    return min(context.reselect_candidates, context.evaluations // _FINALIST_SHARE)


def reselect(result: MethodResult, scored: BudgetedEvaluator, context: MethodContext, budget: Budget,
             candidates: int) -> tuple[MethodResult, int]:
    """Score the search's result on held-out search images (`context.reselect`) the search never saw: the best
    of hundreds of noisy scores on the same images overstates the chosen mask (selection bias), a fresh score
    does not. With `candidates` > 1 the best masks by search score (the method's choice always among them)
    are all rescored and the best by pooled score wins (ties: the method's choice). Choosing by the held-out
    score alone would bias it again (bench/selection_rules.py measures the rules).
    Returns the result with the record's `reselect_*` items, and how many masks were rescored."""
    chosen = result.mask
    pool = {key: entry for key, entry in scored.scored.items() if context.cost.meets(budget, entry[1].counts)}
    pool[chosen.key()] = (float(scored.unmetered(chosen)), chosen)
    ranked = sorted(pool.items(), key=lambda item: (-item[1][0], item[0] != chosen.key(), item[0]))[:candidates]
    if chosen.key() not in {key for key, _ in ranked}:
        ranked[-1] = (chosen.key(), pool[chosen.key()])
    weight = context.reselect_weight
    finalists = [((1 - weight) * search_top1 + weight * held_out, key == chosen.key(), held_out, mask)
                 for key, (search_top1, mask) in ranked for held_out in [float(context.reselect(mask))]]
    _, _, held_out, best = max(finalists, key=lambda f: (f[0], f[1]))
    record = {**result.record, "reselect_top1": held_out, "reselect_candidates": len(finalists),
              "reselect_changed": best.key() != chosen.key(),
              "method_choice_reselect_top1": next(f[2] for f in finalists if f[1]),
              "search_top1_max": max(entry[0] for entry in pool.values())}
    return MethodResult(best, record), len(finalists)


def _check_result(name: str, context: MethodContext, budget: Budget, mask: Mask) -> None:
    context.groups.check(mask)
    if not context.cost.meets(budget, mask.counts):
        ratio = context.cost.ratio(budget.metric, mask.counts)
        raise RuntimeError(f"method {name} returned a mask over budget {budget} ({budget.metric} ratio {ratio:.4f})")


# ------------------------------------------------------------------------------------------------ registry

_REGISTRY: dict[str, type[PruningMethod]] = {}


def register(name: str) -> Callable[[type[PruningMethod]], type[PruningMethod]]:
    """Class decorator: make a PruningMethod available as `name`."""

    def add(cls: type[PruningMethod]) -> type[PruningMethod]:
        if name not in METHOD_MODULES:
            raise ValueError(f"add {name!r} to METHOD_MODULES in graphprune.methods.index so it can be found")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"two pruning methods are registered as {name!r}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def get_method(name: str) -> PruningMethod:
    """A fresh instance of the method registered as `name`."""
    if name not in METHOD_MODULES:
        raise GraphpruneError(f"unknown pruning method {name!r}; choose one of {', '.join(available_methods())}")
    importlib.import_module(METHOD_MODULES[name])
    return _REGISTRY[name]()


# ------------------------------------------------------------------------------------ budget arithmetic


def counts_for_ratios(sizes: Sequence[int], ratios: Sequence[float] | np.ndarray,
                      min_counts: Sequence[int]) -> np.ndarray:
    """Kept channels per group for keep ratios per group: round(ratio * size), within [min_count, size].

    Non-decreasing in every ratio, which is what makes the bisections below exact.
    """
    sizes_array = np.asarray(sizes, dtype=np.int64)
    wanted = np.floor(np.asarray(ratios, dtype=np.float64) * sizes_array + 0.5).astype(np.int64)
    return np.clip(wanted, np.asarray(min_counts, dtype=np.int64), sizes_array)


def largest_scaled_counts(cost: CostModel, budget: Budget, base_ratios: Sequence[float] | np.ndarray) -> np.ndarray:
    """Counts for the keep ratios `scale * base_ratios` (each capped at 1), with the largest scale that meets
    `budget`, found by bisection on the cost. `base_ratios` all ones gives the largest uniform ratio.

    The budget must be feasible (`cost.check_feasible`): scale 0 keeps the minimum of every group.
    """
    sizes, min_counts = cost.groups.sizes, cost.min_counts
    base = np.asarray(base_ratios, dtype=np.float64)
    if base.shape != (len(sizes),) or (base <= 0).any():
        raise ValueError(f"need one positive base ratio per group ({len(sizes)}), got {base}")

    def counts_at(scale: float) -> np.ndarray:
        return counts_for_ratios(sizes, np.minimum(1.0, scale * base), min_counts)

    low, high = 0.0, 1.0 / float(base.min())  # at `high` every ratio is capped at 1: the full network
    if cost.meets(budget, counts_at(high)):
        return counts_at(high)
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if cost.meets(budget, counts_at(middle)):
            low = middle
        else:
            high = middle
    return counts_at(low)


def keep_top(scores: Sequence[np.ndarray], counts: Sequence[int]) -> Mask:
    """Keep the `counts[g]` highest-scoring channels of each group g (ties: the lower channel index stays)."""
    kept = []
    for group_scores, count in zip(scores, counts, strict=True):
        order = np.argsort(-np.asarray(group_scores, dtype=np.float64), kind="stable")
        kept.append(tuple(sorted(int(i) for i in order[:count])))
    return Mask(tuple(len(s) for s in scores), tuple(kept))


def remove_to_budget(mask: Mask, cost: CostModel, budget: Budget, scores: Sequence[np.ndarray],
                     min_channels: int | None = None) -> Mask:
    """Drop the lowest-scoring kept channels network-wide, fewest first, until `mask` meets `budget`.

    scores: one array per group, [size] each, comparable across groups (the global ranking). The
    `min_channels` best kept channels of each group are never dropped (default: the groups' minimum). Exact:
    stops at the first channel whose removal meets the budget (found by bisection, since dropping channels
    never adds cost). Returns `mask` itself when it already meets the budget. Ties: the later group, then
    the higher channel index, go first.
    """
    if cost.meets(budget, mask.counts):
        return mask
    minimum = cost.groups.min_channels if min_channels is None else min_channels
    candidate_group, candidate_channel, candidate_score = [], [], []
    for g, kept in enumerate(mask.kept):
        group_scores = np.asarray(scores[g], dtype=np.float64)
        by_score = sorted(kept, key=lambda i, s=group_scores: (-s[i], i))  # best first
        for i in by_score[min(minimum, mask.sizes[g]):]:
            candidate_group.append(g)
            candidate_channel.append(i)
            candidate_score.append(group_scores[i])
    # lexsort: the last key is primary; lowest score first, ties to the later group and higher channel.
    order = np.lexsort((-np.asarray(candidate_channel), -np.asarray(candidate_group), np.asarray(candidate_score)))
    groups_in_order = np.asarray(candidate_group, dtype=np.int64)[order]
    counts = np.asarray(mask.counts, dtype=np.int64)

    def counts_after(removed: int) -> np.ndarray:
        return counts - np.bincount(groups_in_order[:removed], minlength=len(counts))

    if not cost.meets(budget, counts_after(len(order))):
        ratio = cost.ratio(budget.metric, counts_after(len(order)))
        raise GraphpruneError(
            f"budget {budget} cannot be met by removing channels from this mask while keeping {minimum} per "
            f"group (it leaves {ratio:.4f} of the {budget.metric})"
        )
    low, high = 0, len(order)  # counts_after(low) misses the budget, counts_after(high) meets it
    while high - low > 1:
        middle = (low + high) // 2
        if cost.meets(budget, counts_after(middle)):
            high = middle
        else:
            low = middle
    removed = {(int(g), int(i)) for g, i in zip(groups_in_order[:high],
                                                np.asarray(candidate_channel)[order][:high], strict=True)}
    return Mask(mask.sizes, tuple(tuple(i for i in kept if (g, i) not in removed) for g, kept in enumerate(mask.kept)))


def random_channels(counts: Sequence[int], sizes: Sequence[int], rng: np.random.Generator) -> Mask:
    """Keep `counts[g]` channels of each group g, drawn uniformly without replacement."""
    kept = tuple(tuple(sorted(int(i) for i in rng.choice(size, size=count, replace=False)))
                 for size, count in zip(sizes, counts, strict=True))
    return Mask(tuple(sizes), kept)

