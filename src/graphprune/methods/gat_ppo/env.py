"""The pruning CMDP as a gymnasium environment: one step per channel group, binary keep decisions.

Step t decides the channels of the groups in `steps[t]` (one group per step in topological order by default;
all groups in one step in one-shot mode). The action is a MultiBinary vector padded to the widest step; only
the first `width(t)` entries count. At the end the agent's own mask (before repair) gives the budget
overshoot (the CMDP cost signal); the mask is then repaired to meet the budget (dropping the least important
kept channels) and scored on the search split. The environment holds no reward state: it reports the search
accuracy and overshoot in `info`, and the training loop turns them into rewards (see reward.py).

Observations carry only the dynamic state; the static graph lives in the policy (it never changes), which
keeps the replay buffer small.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import gymnasium as gym
import numpy as np

from graphprune.methods.base import remove_to_budget
from graphprune.network.cost import Budget, CostModel
from graphprune.network.pruning import Mask

BUDGET_FEATURES = ("budget", "cost_ratio", "min_cost_ratio", "to_remove", "progress", "kept_fraction")
MIN_AIM = 1e-6  # keep_to_budget aims at the budget less the margin, never at or below 0
KEEP_TO_BUDGET_STEPS = 12  # bisection steps of keep_to_budget: 1/4096, finer than one channel of any group


@dataclass(frozen=True)
class EpisodeLayout:
    """Which groups each step decides, and where their channels sit in the flat channel vector.

    offsets[g]: first flat index of group g; steps[t]: groups decided at step t.
    """

    sizes: tuple[int, ...]
    steps: tuple[tuple[int, ...], ...]

    @classmethod
    def per_group(cls, sizes: Sequence[int], order: Sequence[int]) -> EpisodeLayout:
        return cls(tuple(sizes), tuple((g,) for g in order))

    @classmethod
    def one_shot(cls, sizes: Sequence[int], order: Sequence[int]) -> EpisodeLayout:
        return cls(tuple(sizes), (tuple(order),))

    @cached_property  # read at every step of every episode
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    @property
    def num_channels(self) -> int:
        return int(sum(self.sizes))

    def step_channels(self, t: int) -> np.ndarray:
        """Flat channel indices decided at step t, in action-slot order."""
        offsets = self.offsets
        return np.concatenate([np.arange(offsets[g], offsets[g] + self.sizes[g]) for g in self.steps[t]])

    @cached_property
    def width(self) -> int:
        return max(len(self.step_channels(t)) for t in range(len(self.steps)))


class PruningEnv(gym.Env):
    """Channel-pruning CMDP. Observation (all float32 but `step`):

    kept [C], decided [C]: flat channel state; step: index of the current step; budget [len(BUDGET_FEATURES)];
    action_mask [W]: 1 where an action slot maps to a channel this step; keep_to_budget [1]: the one keep
    fraction of every undecided group that lands the mask on the budget (`keep_to_budget()`; read by the
    policy's budget prior, not part of `budget`; 0 unless `budget_prior`, which saves ~0.3 ms per step).
    """

    metadata = {"render_modes": []}

    def __init__(self, layout: EpisodeLayout, cost: CostModel, budget: Budget,
                 evaluate: Callable[[Mask], float], importance: Sequence[np.ndarray], min_channels: int = 1,
                 feasibility_wall: bool = False, action: str = "binary", budget_prior: bool = False):
        self.layout, self.cost, self.budget, self.evaluate = layout, cost, budget, evaluate
        self.importance = [np.asarray(i, dtype=np.float64) for i in importance]
        self.min_channels = min_channels
        self.feasibility_wall = feasibility_wall
        self.budget_prior = budget_prior  # whether the policy reads keep_to_budget (0 in the observation if not)
        if action == "ratio" and any(len(groups) != 1 for groups in layout.steps):
            raise ValueError("ratio actions decide one group per step: use the per-group episode layout")
        self.action = action
        self.num_steps = len(layout.steps)
        self._step_channels = [layout.step_channels(t) for t in range(self.num_steps)]
        self._offsets = layout.offsets
        channels, width = layout.num_channels, layout.width
        self.observation_space = gym.spaces.Dict({
            "kept": gym.spaces.Box(0.0, 1.0, (channels,), np.float32),
            "decided": gym.spaces.Box(0.0, 1.0, (channels,), np.float32),
            "step": gym.spaces.Box(0, self.num_steps, (1,), np.int64),
            "budget": gym.spaces.Box(-1.0, 1.0, (len(BUDGET_FEATURES),), np.float32),  # ratios and differences
            "action_mask": gym.spaces.MultiBinary(width),  # which channels the step decides
            "keep_to_budget": gym.spaces.Box(0.0, 1.0, (1,), np.float32),
        })
        # binary: keep bits padded to the widest step; ratio (ablation): the fraction of the group to keep.
        self.action_space = (gym.spaces.MultiBinary(width) if action == "binary"
                             else gym.spaces.Box(0.0, 1.0, (1,), np.float32))
        cost.check_feasible(budget)
        self._min_counts = np.asarray(cost.min_counts)
        self.budget_margin = 0.0  # how far below the budget keep_to_budget aims (gat_ppo.reward.BudgetMargin)
        self.step_seconds = 0.0  # everything inside step(), evaluation included
        self.eval_seconds = 0.0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        self.kept = np.zeros(self.layout.num_channels, dtype=bool)  # after the wall and the minimum rule
        self.agent_kept = np.zeros(self.layout.num_channels, dtype=bool)  # the agent's own bits
        self.decided = np.zeros(self.layout.num_channels, dtype=bool)
        self.forced = 0
        return self._observation(), {}

    def step(self, action):
        start = time.perf_counter()
        try:
            return self._step(action)
        finally:
            self.step_seconds += time.perf_counter() - start

    def _step(self, action):
        channels = self._step_channels[self.t]
        keep = self._keep_bits(action, self.layout.steps[self.t], len(channels))
        self.agent_kept[channels] = keep
        self.kept[channels] = keep
        self.decided[channels] = True
        step_groups = self.layout.steps[self.t]
        forced = self._enforce_min_channels(step_groups)
        if self.feasibility_wall:
            forced += self._wall(step_groups)
        self.forced += forced
        self.t += 1
        if self.t < self.num_steps:
            return self._observation(), 0.0, False, False, self._info()
        return self._finish()

    def _keep_bits(self, action, step_groups: Sequence[int], width: int) -> np.ndarray:
        if self.action == "binary":
            return np.asarray(action[:width]).astype(bool)  # Tianshou passes floats 0./1.
        (g,) = step_groups  # ratio: keep that fraction of the group's most important channels
        count = int(np.floor(float(np.clip(np.asarray(action).reshape(-1)[0], 0.0, 1.0)) * width + 0.5))
        keep = np.zeros(width, dtype=bool)
        keep[np.argsort(-self.importance[g])[:count]] = True
        return keep

    def _wall(self, step_groups: Sequence[int]) -> int:
        """AMC's feasibility wall: if the groups still to come could not meet the budget even at their minimum,
        drop this step's least important kept channels until they can. Returns how many were dropped."""
        counts = self._counts_now(self._min_counts)
        if self.cost.meets(self.budget, counts):
            return 0
        flags = self.kept.copy()
        undecided = ~self.decided
        for g in range(len(self.layout.sizes)):  # undecided groups at their minimum: their best channels
            flat = slice(self._offsets[g], self._offsets[g] + self.layout.sizes[g])
            if undecided[flat].all():
                best = np.argsort(-self.importance[g])[: self._min_counts[g]]
                flags[self._offsets[g] + best] = True
        step = set(step_groups)
        # Only this step's channels may go (everything else scores +inf, so it is never reached).
        scores = [self.importance[g] if g in step else np.full(self.layout.sizes[g], np.inf)
                  for g in range(len(self.layout.sizes))]
        walled = remove_to_budget(self._mask(flags), self.cost, self.budget, scores, self.min_channels)
        dropped = 0
        for g in step_groups:
            flat = slice(self._offsets[g], self._offsets[g] + self.layout.sizes[g])
            new = walled.keep_flags(g).numpy()
            dropped += int(self.kept[flat].sum() - new.sum())
            self.kept[flat] = new
        return dropped

    def _finish(self):
        forced = self.forced
        agent_mask = self._mask(self.agent_kept)
        agent_ratio = self.cost.ratio(self.budget.metric, agent_mask.counts)
        overshoot = max(0.0, agent_ratio - self.budget.ratio)
        # With the wall the mask already meets the budget; without it, repair it here.
        mask = remove_to_budget(self._mask(self.kept), self.cost, self.budget, self.importance, self.min_channels)
        start = time.perf_counter()
        accuracy = self.evaluate(mask)
        self.eval_seconds += time.perf_counter() - start
        final_flags = np.concatenate([mask.keep_flags(g).numpy() for g in range(len(self.layout.sizes))])
        info = self._info(
            search_top1=accuracy, overshoot=overshoot, agent_cost_ratio=agent_ratio,
            cost_ratio=self.cost.ratio(self.budget.metric, mask.counts),
            repaired_channels=forced + int(self.kept.sum()) - int(sum(mask.counts)), kept_flags=final_flags,
        )
        self.kept = final_flags
        return self._observation(), 0.0, True, False, info

    def _enforce_min_channels(self, step_groups: Sequence[int]) -> int:
        """Keep the most important channels of any group left below the minimum; returns how many."""
        forced = 0
        for g in step_groups:
            flat = slice(self._offsets[g], self._offsets[g] + self.layout.sizes[g])
            missing = min(self.min_channels, self.layout.sizes[g]) - int(self.kept[flat].sum())
            if missing > 0:
                candidates = [i for i in np.argsort(-self.importance[g]) if not self.kept[flat][i]]
                self.kept[self._offsets[g] + np.asarray(candidates[:missing])] = True
                forced += missing
        return forced

    def _mask(self, flags: np.ndarray) -> Mask:
        return Mask.from_keep_flags(np.split(flags, self._offsets[1:]))

    def _counts_now(self, undecided_at: np.ndarray) -> np.ndarray:
        """Kept counts per group: decided groups as decided, the others at `undecided_at`."""
        return self._counts_given_decisions()(undecided_at)

    def _counts_given_decisions(self) -> Callable[[np.ndarray], np.ndarray]:
        """`_counts_now` as a function of `undecided_at`, the decided groups counted once (bisection reuses it)."""
        counts = np.add.reduceat(self.kept.astype(np.int64), self._offsets)
        decided_groups = np.add.reduceat(self.decided.astype(np.int64), self._offsets) > 0
        return lambda undecided: np.where(decided_groups, counts, undecided)

    def _observation(self) -> dict:
        full = np.asarray(self.layout.sizes)
        ratio_now = self.cost.ratio(self.budget.metric, self._counts_now(full))
        ratio_min = self.cost.ratio(self.budget.metric, self._counts_now(self._min_counts))
        decided = self.decided.sum()
        budget = np.array([
            self.budget.ratio, ratio_now, ratio_min, ratio_now - self.budget.ratio, self.t / self.num_steps,
            self.kept.sum() / decided if decided else 1.0,
        ], dtype=np.float32)
        action_mask = np.zeros(self.layout.width, dtype=np.int8)
        if self.t < self.num_steps:
            action_mask[: len(self._step_channels[self.t])] = 1
        return {
            "kept": self.kept.astype(np.float32), "decided": self.decided.astype(np.float32),
            "step": np.array([self.t], dtype=np.int64), "budget": budget, "action_mask": action_mask,
            "keep_to_budget": np.array([self.keep_to_budget() if self.budget_prior else 0.0], dtype=np.float32),
        }

    def keep_to_budget(self) -> float:
        """The keep fraction q in [0, 1] such that the decided groups as decided and every undecided group at
        round(q * size) channels (at least its minimum) meet the budget, less `budget_margin` (set by the
        training loop), with the least room to spare: 1 when keeping everything still meets it, 0 when even
        the minimum does not. Bisection on the analytic cost
        (it never falls as q grows), to 1/2^12."""
        sizes = np.asarray(self.layout.sizes)
        if self.t >= self.num_steps:
            return 0.0

        aim = Budget(self.budget.metric, max(self.budget.ratio - self.budget_margin, MIN_AIM))

        counts_now = self._counts_given_decisions()

        def meets(q: float) -> bool:
            return self.cost.meets(aim, counts_now(np.maximum(self._min_counts, np.rint(q * sizes).astype(np.int64))))

        if meets(1.0):
            return 1.0
        low, high = 0.0, 1.0
        if not meets(low):
            return 0.0
        for _ in range(KEEP_TO_BUDGET_STEPS):
            middle = (low + high) / 2
            low, high = (middle, high) if meets(middle) else (low, middle)
        return low

    def _info(self, **final) -> dict:
        # The same keys at every step, so Tianshou can stack infos into its buffer.
        # -1 marks "not finished yet" (not NaN, which compares unequal to itself).
        info = {"search_top1": -1.0, "overshoot": 0.0, "agent_cost_ratio": -1.0, "cost_ratio": -1.0,
                "repaired_channels": 0, "kept_flags": np.zeros(self.layout.num_channels, dtype=bool)}
        info.update(final)
        return info
