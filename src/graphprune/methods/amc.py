"""`amc`: AMC (He et al., ECCV 2018; code mit-han-lab/amc) on our interface.

One episode visits the channel groups in network order (by the topological position of each group's root
layer). At each step the state is AMC's layer embedding of the current group (`STATE_FEATURES`) and the
action one keep ratio in [lower_bound, 1], which the feasibility wall lowers so that the groups still to come
can meet the budget at their lower bound: every finished episode is feasible without repair. Channels inside
a group are ranked by filter L1 norm. Agent: Tianshou 2.0 DDPG (actor and critic MLPs 300-300), random
warm-up episodes, then truncated-normal exploration whose sigma decays per episode; every transition of an
episode gets the episode's reward (search accuracy, or -error * log(FLOPs)) and the critic's targets subtract
a moving average of rewards, as in the published code. docs/BASELINES.md lists what we chose.

This module never evaluates a mask over budget, never trains the network, and writes no files.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from tianshou.algorithm import DDPG
from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Batch, ReplayBuffer
from tianshou.utils.torch_utils import policy_within_training_step
from torch import Tensor, nn

from graphprune.methods.base import MethodContext, MethodResult, PruningMethod, counts_for_ratios, register
from graphprune.methods.importance import filter_l1_scores
from graphprune.methods.rl_common import MAX_EPISODES_PER_EVALUATION, ScoredMasks, seeded_global_rngs
from graphprune.methods.settings import AmcSettings
from graphprune.network.cost import Budget, CostModel
from graphprune.network.graph import topological_group_order, trace_layers
from graphprune.network.pruning import ChannelGroups

# AMC's layer embedding, one row per group. The first seven are static and min-max normalised over the
# groups; `cost` is the group's share of the budget's metric (FLOPs for a flops target). The last three are
# dynamic fractions of the full network's cost (already in [0, 1], as in the published code): `reduced` =
# removed so far, `rest` = what depends on the groups after this one; `previous_action` = the kept fraction
# chosen for the previous group (1 at the first step).
STATE_FEATURES = ("index", "type", "in_width", "out_width", "stride", "kernel", "cost",
                  "reduced", "rest", "previous_action")
STATIC_FEATURES = STATE_FEATURES[:7]
# The published actor's and critic's last layers start uniform in [-INIT_W, INIT_W] (AMC `init_w`).
INIT_W = 0.003




# --------------------------------------------------------------------------------------- the environment


def static_group_features(model: nn.Module, groups: ChannelGroups, cost: CostModel, metric: str,
                          order: list[int]) -> np.ndarray:
    """[G, len(STATIC_FEATURES)] in `order`, min-max normalised per column (a constant column becomes 0)."""
    modules = dict(model.named_modules())
    full = np.asarray(groups.sizes)
    full_cost = cost.ratio(metric, full)
    rows = []
    for step, g in enumerate(order):
        root = modules[groups.groups[g].root]
        is_linear = isinstance(root, nn.Linear)
        without_group = full.copy()
        without_group[g] = 0
        rows.append([
            step, float(is_linear), root.in_features if is_linear else root.in_channels, groups.sizes[g],
            1 if is_linear else max(root.stride), 1 if is_linear else max(root.kernel_size),
            full_cost - cost.ratio(metric, without_group),
        ])
    table = np.asarray(rows, dtype=np.float64)
    low, span = table.min(0), table.max(0) - table.min(0)
    return np.divide(table - low, span, out=np.zeros_like(table), where=span > 0)


class LayerwiseEnv(gym.Env):
    """AMC's MDP: step t sets the keep ratio of group order[t].

    Observation [len(STATE_FEATURES)]; action [1]: a keep ratio, clipped to [lower_bound, 1] and then to the
    feasibility wall (`wall_count`). After the last group the mask is scored and the step returns the
    episode's reward; every other step returns 0.
    """

    metadata = {"render_modes": []}

    def __init__(self, static_features: np.ndarray, order: list[int], cost: CostModel, budget: Budget,
                 masks: ScoredMasks, settings: AmcSettings):
        self.static, self.order, self.cost, self.budget, self.masks = static_features, order, cost, budget, masks
        self.settings = settings
        self.sizes = np.asarray(cost.groups.sizes)
        lower = counts_for_ratios(self.sizes, np.full(len(self.sizes), settings.lower_bound), cost.min_counts)
        # Where even every group at the lower bound misses the budget, the wall may go down to the groups'
        # minimum instead (the published code would fail there).
        self.lower_bound_relaxed = not cost.meets(budget, lower)
        self.floor = np.asarray(cost.min_counts) if self.lower_bound_relaxed else lower
        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(STATE_FEATURES),), np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.walled_steps = 0  # steps where the wall lowered the agent's ratio

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        self.counts = self.sizes.copy()  # decided groups as decided, the others whole
        self.previous_action = 1.0
        return self._observation(), {}

    def step(self, action):
        g = self.order[self.t]
        ratio = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], self.settings.lower_bound, 1.0))
        wanted = int(counts_for_ratios([self.sizes[g]], [ratio], [self.floor[g]])[0])
        wall = self.wall_count(g)
        self.walled_steps += wanted > wall
        self.counts[g] = min(wanted, wall)
        self.previous_action = self.counts[g] / self.sizes[g]
        self.t += 1
        if self.t < len(self.order):
            return self._observation(), 0.0, False, False, {}
        accuracy = self.masks.score(self.counts)
        return self._observation(), self.reward(accuracy), True, False, {"search_top1": accuracy}

    def wall_count(self, g: int) -> int:
        """The most channels group g may keep so that the groups after it, at their floor, still meet the
        budget (the earlier ones as decided): AMC's `_action_wall`, exact on our cost model by bisection."""
        trial = self.counts.copy()
        later = self.order[self.t + 1:]
        trial[later] = self.floor[later]
        low, high = int(self.floor[g]), int(self.sizes[g])  # low meets the budget: the previous wall ensured it

        def meets(count: int) -> bool:
            trial[g] = count
            return self.cost.meets(self.budget, trial)

        if meets(high):
            return high
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if meets(middle) else (low, middle)
        return low

    def reward(self, accuracy: float) -> float:
        if self.settings.reward == "acc":
            return accuracy
        return -(1.0 - accuracy) * math.log(self.cost.flops(self.counts))

    def _observation(self) -> np.ndarray:
        step = min(self.t, len(self.order) - 1)  # the terminal observation repeats the last row
        full_cost = self.cost.ratio(self.budget.metric, self.sizes)
        now = self.cost.ratio(self.budget.metric, self.counts)
        without_later = self.counts.copy()
        without_later[self.order[step + 1:]] = 0
        dynamic = [full_cost - now, now - self.cost.ratio(self.budget.metric, without_later), self.previous_action]
        return np.concatenate([self.static[step], dynamic]).astype(np.float32)


# ------------------------------------------------------------------------------------------------ the agent


class KeepRatioActor(nn.Module):
    """forward(obs [B, S]) -> (keep ratio [B, 1] in (0, 1), state): the published 300-300 MLP with a sigmoid."""

    def __init__(self, state_width: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(state_width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1), nn.Sigmoid())
        nn.init.uniform_(self.net[4].weight, -INIT_W, INIT_W)

    def forward(self, obs, state=None, info=None) -> tuple[Tensor, None]:
        device = self.net[0].weight.device
        return self.net(torch.as_tensor(obs, dtype=torch.float32, device=device)), state


class StateActionCritic(nn.Module):
    """forward(obs [B, S], act [B, 1]) -> Q [B, 1]. The published critic adds a linear map of the state and one
    of the action before its hidden layers: one linear layer over their concatenation."""

    def __init__(self, state_width: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(state_width + 1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))
        nn.init.uniform_(self.net[4].weight, -INIT_W, INIT_W)

    def forward(self, obs, act) -> Tensor:
        device = self.net[0].weight.device
        obs = torch.as_tensor(obs, dtype=torch.float32, device=device)
        act = torch.as_tensor(act, dtype=torch.float32, device=device).reshape(obs.shape[0], -1)
        return self.net(torch.cat([obs, act], dim=1))


class BaselinedDDPG(DDPG):
    """Tianshou's DDPG whose one-step targets subtract a moving average of the minibatch rewards (AMC's
    `moving_average` with `moving_alpha`), which centres the episode rewards every transition carries."""

    def __init__(self, *, baseline_alpha: float, **ddpg_arguments):
        super().__init__(**ddpg_arguments)
        self.baseline_alpha = baseline_alpha
        self.reward_baseline: float | None = None

    def _preprocess_batch(self, batch, buffer, indices):
        batch = super()._preprocess_batch(batch, buffer, indices)  # returns = r + gamma * (1 - done) * Q'(s')
        mean_reward = float(np.mean(batch.rew))
        if self.reward_baseline is None:
            self.reward_baseline = mean_reward
        else:
            self.reward_baseline += self.baseline_alpha * (mean_reward - self.reward_baseline)
        batch.returns = batch.returns - self.reward_baseline  # one-step return: shifting r shifts the target
        return batch


def truncated_normal(mean: float, sigma: float, low: float, high: float, rng: np.random.Generator) -> float:
    """One draw of N(mean, sigma) truncated to [low, high], by the inverse CDF (exact, no rejection loop)."""
    cdf = torch.special.ndtr(torch.tensor([(low - mean) / sigma, (high - mean) / sigma], dtype=torch.float64))
    quantile = cdf[0] + float(rng.uniform()) * (cdf[1] - cdf[0])
    draw = mean + sigma * float(torch.special.ndtri(quantile.clamp(1e-12, 1 - 1e-12)))
    return float(np.clip(draw, low, high))


# -------------------------------------------------------------------------------------------- the method


@register("amc")
class Amc(PruningMethod):
    """AMC: DDPG sets one keep ratio per group, layer by layer, under the feasibility wall."""

    settings_type = AmcSettings
    needs_evaluator = True

    def choose(self, context: MethodContext, budget: Budget, settings: AmcSettings) -> MethodResult:
        layers = trace_layers(context.model, context.groups.input_shape)
        order = topological_group_order(context.groups.roots, layers.names)
        static = static_group_features(context.model, context.groups, context.cost, budget.metric, order)
        masks = ScoredMasks(context.cost, budget, filter_l1_scores(context.model, context.groups), context.evaluator)
        env = LayerwiseEnv(static, order, context.cost, budget, masks, settings)
        with seeded_global_rngs(context.seed):
            algorithm = _ddpg(env, settings)
            episodes, updates = _train(algorithm, env, settings, np.random.default_rng(context.seed))
        notes = (f"AMC: DDPG, {settings.warmup_episodes} warm-up episodes, keep ratio >= {settings.lower_bound} "
                 f"under the feasibility wall, L1 filter ranking, reward {settings.reward}; best mask by search "
                 "accuracy")
        if env.lower_bound_relaxed:
            notes += f"; the budget is below every group at {settings.lower_bound}: the wall used the group minimum"
        return MethodResult(masks.best_mask, {
            "episodes": episodes, "warmup_episodes": settings.warmup_episodes, "ddpg_updates": updates,
            "walled_steps": env.walled_steps,
            "best_search_top1": masks.best_accuracy, "best_keep_ratios": masks.best_keep_ratios(),
            "group_order": order, "notes": notes,
        })


def _ddpg(env: LayerwiseEnv, settings: AmcSettings) -> BaselinedDDPG:
    state_width = len(STATE_FEATURES)
    policy = ContinuousDeterministicPolicy(
        actor=KeepRatioActor(state_width, settings.hidden), exploration_noise=None,  # see truncated_normal
        action_space=env.action_space, observation_space=env.observation_space, action_scaling=False,
        action_bound_method=None,
    )
    return BaselinedDDPG(
        policy=policy, policy_optim=AdamOptimizerFactory(lr=settings.actor_lr),
        critic=StateActionCritic(state_width, settings.hidden), critic_optim=AdamOptimizerFactory(lr=settings.critic_lr),
        tau=settings.tau, gamma=settings.gamma, n_step_return_horizon=1, baseline_alpha=settings.baseline_alpha,
    )


def _train(algorithm: BaselinedDDPG, env: LayerwiseEnv, settings: AmcSettings,
           rng: np.random.Generator) -> tuple[int, int]:
    """AMC's loop: act for a whole episode (uniform random during warm-up, then the actor's ratio with
    truncated-normal noise), give every transition the episode's reward, then one DDPG update per transition;
    until the search's evaluations are spent (warm-up included). Returns (episodes, updates)."""
    steps = len(env.order)
    buffer = ReplayBuffer(settings.replay_episodes * steps)
    updates = episodes = 0
    for episode in range(MAX_EPISODES_PER_EVALUATION * env.masks.evaluator.limit):
        if env.masks.exhausted:
            break
        episodes += 1
        obs, _ = env.reset()
        transitions = []
        for _ in range(steps):
            if episode < settings.warmup_episodes:
                ratio = rng.uniform(settings.lower_bound, 1.0)
            else:
                with torch.no_grad():
                    mean = float(algorithm.policy(Batch(obs=obs[None], info={})).act.reshape(-1)[0])
                sigma = settings.noise_sigma * settings.noise_decay ** (episode - settings.warmup_episodes)
                ratio = truncated_normal(mean, sigma, settings.lower_bound, 1.0, rng)
            action = np.array([ratio], dtype=np.float32)
            next_obs, reward, terminated, _, _ = env.step(action)
            transitions.append((obs, action, next_obs, terminated))
            obs = next_obs
        for state, action, next_state, terminated in transitions:
            buffer.add(Batch(obs=state, act=action, rew=reward, terminated=terminated, truncated=False,
                             obs_next=next_state, info={}))
        if episode >= settings.warmup_episodes:
            with policy_within_training_step(algorithm.policy):
                for _ in transitions:
                    algorithm.update(buffer, sample_size=settings.batch_size)
                    updates += 1
    return episodes, updates
