"""Terminal rewards of the pruning agent, computed from the search accuracy of each finished episode.

Rewards are computed in the training loop, in episode order, not inside the environments: the
self-competition record must be one record shared by all parallel environments (and saved for resume).

- `self_competition` (default): r = clip((a - b) / s, -c, c), with b the agent's own reference (its best
  feasible accuracy so far, or a high quantile of its recent accuracies) and s the spread of recent
  accuracies (standard deviation, floored), so beating the record is rewarded and the signal keeps its scale
  when most samples fall below it (a fixed small s saturated and the policy collapsed; docs/AGENT.md).
- `ranked`: the percentile of a among the last K accuracies, mapped to [-1, 1].
- `absolute`: a itself; PPO's advantage normalisation acts as the baseline.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from graphprune.methods.settings import RewardSettings


class SelfCompetitionReward:
    """Turns accuracies into rewards against the agent's own record; `state_dict` for exact resume."""

    def __init__(self, settings: RewardSettings):
        self.settings = settings
        self.recent: deque[float] = deque(maxlen=settings.window)
        self.best = float("-inf")

    def __call__(self, accuracy: float, penalty: float = 0.0) -> float:
        """Reward of one finished (repaired, hence feasible) episode whose accuracy counts `penalty` lower (the
        Lagrangian cost of its budget overshoot, in accuracy units: consistent with every reward kind); then
        record its accuracy."""
        reward = self._score(accuracy - penalty)
        self.recent.append(accuracy)
        self.best = max(self.best, accuracy)
        return reward

    def _score(self, accuracy: float) -> float:
        s = self.settings
        if s.kind == "absolute":
            return accuracy
        if not self.recent:  # nothing to compete against yet
            return 0.0
        history = np.fromiter(self.recent, dtype=float)
        if s.kind == "ranked":
            below = (history < accuracy).mean() + 0.5 * (history == accuracy).mean()
            return float(2.0 * below - 1.0)
        reference = self.best if s.reference == "best" else float(np.quantile(history, s.quantile))
        spread = max(float(history.std()), s.spread_floor)
        return float(np.clip((accuracy - reference) / spread, -s.clip, s.clip))

    def state_dict(self) -> dict:
        return {"recent": list(self.recent), "best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.recent = deque(state["recent"], maxlen=self.settings.window)
        self.best = float(state["best"])


@dataclass
class LagrangeMultiplier:
    """Dual ascent on the budget constraint E[overshoot] <= tolerance (PPO-Lagrangian).

    overshoot = max(0, cost ratio of the agent's own mask - budget ratio), measured on the agent's bits before
    the feasibility wall and repair; the episode's accuracy counts `value * overshoot` lower in its reward (so
    `value` is accuracy points per point of overshoot, whatever the reward kind), and the agent learns to meet
    the budget itself instead of leaving the cuts to the wall or repair.

    lr, tolerance and max_value have no defaults here: the agent's settings (`lagrange_lr`, `lagrange_tolerance`,
    `lagrange_max`) are their one source.
    """

    lr: float
    tolerance: float
    max_value: float
    value: float = 0.0

    def update(self, overshoots: np.ndarray) -> float:
        """overshoots: of each episode of the last iteration (>= 0)."""
        if len(overshoots):
            step = self.lr * (float(np.mean(overshoots)) - self.tolerance)
            self.value = float(np.clip(self.value + step, 0.0, self.max_value))
        return self.value


@dataclass
class BudgetMargin:
    """How far below the budget (cost-ratio points) the policy's budget prior aims: dual ascent on the share of
    episodes whose own mask is over budget, toward `target_share`. With the prior aiming at the budget itself,
    the last steps' random bits leave about half of the episodes a hair over (repaired); a margin of about one
    standard deviation of that final cost brings the share down, at a cost of a fraction of a point of budget.

    value stays in [0, max_value]; lr 0 leaves it at 0.
    """

    lr: float
    target_share: float
    max_value: float
    value: float = 0.0

    def update(self, overshoots: np.ndarray) -> float:
        """overshoots: of each episode of the last iteration (>= 0; > 0 where the agent's mask was over)."""
        if len(overshoots) and self.lr > 0:
            share = float(np.mean(np.asarray(overshoots) > 0))
            self.value = float(np.clip(self.value + self.lr * (share - self.target_share), 0.0, self.max_value))
        return self.value
