"""`gnnrl`: GNN-RL (Yu et al., ICML 2022; code yusx-swapp/GNN-RL-Model-Compression) on our interface.

The network is a two-level graph: level 1 is its computational graph (the layer nodes and data-flow edges of
`graph.trace_layers`, the same nodes as `NetworkGraph`'s layer nodes), level 2 has one node per channel group
(a residual-coupled set is one group), the layers pooled into the group whose channels they carry. A
multi-stage GCN encoder embeds level 1, mean-pools it into level 2, embeds that, and reads the graph out.
PPO (Tianshou 2.0) drives a Gaussian policy with fixed std over one pruning action per group; up to
`max_steps` steps per episode, each multiplying every group's kept fraction by (1 - a). Channels inside a
group are ranked by filter L2 norm. Reward: search accuracy in percent - 100 once the budget is met, -100 if
it is still missed after the last step. docs/BASELINES.md lists what is kept from the paper and what we chose.

This module never evaluates a mask over budget, never trains the network, and writes no files.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from tianshou.algorithm import PPO
from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.utils.torch_utils import policy_within_training_step
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, global_mean_pool
from torch_geometric.utils import to_undirected

from graphprune.errors import GraphpruneError
from graphprune.methods.base import (
    EvaluationBudgetExhausted,
    MethodContext,
    MethodResult,
    PruningMethod,
    counts_for_ratios,
    largest_scaled_counts,
    register,
)
from graphprune.methods.importance import filter_l2_scores
from graphprune.methods.rl_common import MAX_EPISODES_PER_EVALUATION, ScoredMasks, seeded_global_rngs
from graphprune.methods.settings import GnnRlSettings
from graphprune.network.cost import Budget, CostModel
from graphprune.network.graph import trace_layers
from graphprune.network.pruning import ChannelGroups

# Dynamic columns appended to each layer node's structure features: the kept fraction of the channels it
# writes (its group's), of the channels it reads (mean over its inputs' groups), and the episode progress.
DYNAMIC_LAYER_FEATURES = ("out_kept", "in_kept", "progress")




# ----------------------------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class LayerHierarchy:
    """The two-level graph of one network (L layers, G groups).

    layer_features: [L, F] structure features of the layer nodes (graph.STRUCTURE_FEATURES);
    layer_edges: [2, E] data flow between layers, both directions; layer_group: [L] the level-2 node (group)
    each layer belongs to; layer_input_groups: [L, G] mean over a layer's inputs of their groups (one-hot
    rows averaged; zero row for the input layer); group_edges: [2, E2] groups that exchange data, both ways.
    """

    layer_names: tuple[str, ...]
    layer_features: Tensor
    layer_edges: Tensor
    layer_group: Tensor
    layer_input_groups: Tensor
    group_edges: Tensor

    @property
    def num_groups(self) -> int:
        return self.layer_input_groups.shape[1]


def build_hierarchy(model: nn.Module, groups: ChannelGroups) -> LayerHierarchy:
    """Level 1: the traced layers. Level 2: one node per channel group. A layer belongs to the group whose
    channels it writes (its conv/BN is an "out" member); any other layer (activation, add, pool, classifier)
    to the group of its first input, else of its first output, so that e.g. a residual add and the ReLU after
    it join the residual stream's group. A layer with no group up- or downstream carries no decision and
    joins group 0."""
    if len(groups) == 0:
        raise GraphpruneError("gnnrl needs at least one prunable channel group; this model has none")
    trace = trace_layers(model, groups.input_shape)
    position = {name: i for i, name in enumerate(trace.names)}
    num_layers, num_groups = len(trace.names), len(groups)
    group_of = [-1] * num_layers
    for group in groups.groups:
        for module in group.out_modules:
            if module in position:
                group_of[position[module]] = group.index
    inputs: list[list[int]] = [[] for _ in range(num_layers)]
    outputs: list[list[int]] = [[] for _ in range(num_layers)]
    for source, target in trace.edges.t().tolist():
        inputs[target].append(source)
        outputs[source].append(target)
    for i in range(num_layers):  # topological order: inputs are final when reached
        group_of[i] = group_of[i] if group_of[i] >= 0 else next((group_of[j] for j in inputs[i] if group_of[j] >= 0), -1)
    for i in reversed(range(num_layers)):
        group_of[i] = group_of[i] if group_of[i] >= 0 else next((group_of[j] for j in outputs[i] if group_of[j] >= 0), -1)
    group_of = [g if g >= 0 else 0 for g in group_of]

    input_groups = torch.zeros(num_layers, num_groups)
    for i, sources in enumerate(inputs):
        for j in sources:
            input_groups[i, group_of[j]] += 1.0 / len(sources)
    group_pairs = sorted({(group_of[s], group_of[t]) for s, t in trace.edges.t().tolist() if group_of[s] != group_of[t]})
    group_edges = torch.tensor(group_pairs, dtype=torch.long).reshape(-1, 2).t()
    return LayerHierarchy(
        layer_names=tuple(trace.names),
        layer_features=trace.structure_features(),
        layer_edges=to_undirected(trace.edges, num_nodes=num_layers),
        layer_group=torch.tensor(group_of, dtype=torch.long),
        layer_input_groups=input_groups,
        group_edges=to_undirected(group_edges, num_nodes=num_groups),
    )


# ------------------------------------------------------------------------------------------ the networks


class MultiStageEncoder(nn.Module):
    """Graph embedding of a batch of states: forward(obs [B, G + 1]) -> [B, embedding].

    obs: the kept fraction of each group, then the episode progress (step / max_steps). Stage 1: GCN over the
    layer graph (B disjoint copies), node features = structure + DYNAMIC_LAYER_FEATURES; mean-pool each
    group's layers into its level-2 node. Stage 2: GCN over the group graph, mean over groups, linear readout
    (the published encoder's shape: one GCN per stage, ReLU, mean pooling between and after the stages).
    """

    def __init__(self, hierarchy: LayerHierarchy, hidden: int, embedding: int):
        super().__init__()
        self.register_buffer("layer_features", hierarchy.layer_features.float())  # [L, F]
        self.register_buffer("layer_edges", hierarchy.layer_edges)  # [2, E]
        self.register_buffer("layer_group", hierarchy.layer_group)  # [L]
        self.register_buffer("layer_input_groups", hierarchy.layer_input_groups)  # [L, G]
        self.register_buffer("group_edges", hierarchy.group_edges)  # [2, E2]
        self.num_layers, self.num_groups = len(hierarchy.layer_names), hierarchy.num_groups
        in_width = hierarchy.layer_features.shape[1] + len(DYNAMIC_LAYER_FEATURES)
        self.layer_conv = GCNConv(in_width, hidden)
        self.group_conv = GCNConv(hidden, hidden)
        self.readout = nn.Linear(hidden, embedding)

    def forward(self, obs) -> Tensor:
        state = torch.as_tensor(obs, dtype=torch.float32, device=self.layer_features.device)  # [B, G + 1]
        batch = state.shape[0]
        kept, progress = state[:, : self.num_groups], state[:, self.num_groups:]
        out_kept = kept[:, self.layer_group]  # [B, L]
        # The input layer reads the image: its missing row counts as fully kept.
        in_kept = kept @ self.layer_input_groups.t() + (1.0 - self.layer_input_groups.sum(1))  # [B, L]
        x = torch.cat([
            self.layer_features.expand(batch, -1, -1), out_kept[..., None], in_kept[..., None],
            progress[:, None, :].expand(-1, self.num_layers, -1),
        ], dim=-1).reshape(batch * self.num_layers, -1)  # [B*L, F + 3]
        h = torch.relu(self.layer_conv(x, _batched_edges(self.layer_edges, batch, self.num_layers)))
        copy = torch.arange(batch, device=x.device)
        node_group = (self.layer_group[None, :] + self.num_groups * copy[:, None]).reshape(-1)  # [B*L]
        h = global_mean_pool(h, node_group, size=batch * self.num_groups)  # [B*G, H]
        h = torch.relu(self.group_conv(h, _batched_edges(self.group_edges, batch, self.num_groups)))
        h = global_mean_pool(h, copy.repeat_interleave(self.num_groups), size=batch)  # [B, H]
        return torch.relu(self.readout(h))


def _batched_edges(edges: Tensor, batch: int, num_nodes: int) -> Tensor:
    """edges [2, E] of one graph -> [2, B*E] of B disjoint copies (copy b's nodes offset by b * num_nodes)."""
    offsets = torch.arange(batch, device=edges.device) * num_nodes
    return (edges[:, None, :] + offsets[None, :, None]).reshape(2, -1)


class GroupRatiosActor(nn.Module):
    """forward(obs [B, G + 1]) -> ((mean [B, G] in (-1, 1), std [B, G]), state): the published actor, an MLP
    from the graph embedding to one tanh-bounded mean per group, and a fixed std."""

    def __init__(self, encoder: MultiStageEncoder, settings: GnnRlSettings):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(settings.embedding, settings.actor_hidden), nn.ReLU(),
                                  nn.Linear(settings.actor_hidden, encoder.num_groups), nn.Tanh())
        self.action_std = settings.action_std

    def forward(self, obs, state=None, info=None) -> tuple[tuple[Tensor, Tensor], None]:
        mean = self.head(self.encoder(obs))
        return (mean, torch.full_like(mean, self.action_std)), state


class ValueCritic(nn.Module):
    """forward(obs [B, G + 1]) -> value [B, 1], from its own encoder (the published critic shares none)."""

    def __init__(self, encoder: MultiStageEncoder, embedding: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(embedding, 1)

    def forward(self, obs, state=None, info=None) -> Tensor:
        return self.head(self.encoder(obs))


def fixed_std_gaussian(mean_and_std: tuple[Tensor, Tensor]) -> torch.distributions.Distribution:
    """The joint diagonal Gaussian over the G actions (the published MultivariateNormal with diagonal cov)."""
    mean, std = mean_and_std
    return torch.distributions.Independent(torch.distributions.Normal(mean, std), 1)


# --------------------------------------------------------------------------------------- the environment


class RatioEnv(gym.Env):
    """GNN-RL's MDP on kept fractions per group.

    Observation [G + 1]: kept fraction per group, then step / max_steps. Action [G]: the raw Gaussian sample;
    each group's kept fraction becomes clip(kept * (1 - clip(a, 0, 1)), min_keep, 1). The episode ends when
    the kept counts meet the budget (reward 100 * search accuracy - 100) or after `max_steps` steps
    (reward -100). It also keeps the counts the search needs: episodes, budget hits, the closest miss.
    """

    metadata = {"render_modes": []}

    def __init__(self, cost: CostModel, budget: Budget, masks: ScoredMasks, settings: GnnRlSettings):
        self.cost, self.budget, self.masks, self.settings = cost, budget, masks, settings
        self.sizes = np.asarray(cost.groups.sizes)
        self.min_counts = np.asarray(cost.min_counts)
        num_groups = len(self.sizes)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (num_groups + 1,), np.float32)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (num_groups,), np.float32)
        self.episodes = 0
        self.episodes_meeting_budget = 0
        self.closest_miss: tuple[float, np.ndarray] | None = None  # (cost ratio, kept fractions)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.kept = np.ones(len(self.sizes))
        self.t = 0
        return self._observation(), {}

    def step(self, action):
        pruned = np.clip(np.asarray(action, dtype=np.float64), 0.0, 1.0)
        self.kept = np.clip(self.kept * (1.0 - pruned), self.settings.min_keep, 1.0)
        self.t += 1
        counts = self.counts()
        if self.cost.meets(self.budget, counts):
            self.episodes += 1
            self.episodes_meeting_budget += 1
            return self._observation(), 100.0 * self.masks.score(counts) - 100.0, True, False, {}
        if self.t >= self.settings.max_steps:
            self.episodes += 1
            ratio = self.cost.ratio(self.budget.metric, counts)
            if self.closest_miss is None or ratio < self.closest_miss[0]:
                self.closest_miss = (ratio, self.kept.copy())
            return self._observation(), -100.0, True, False, {}
        return self._observation(), 0.0, False, False, {}

    def counts(self) -> np.ndarray:
        return counts_for_ratios(self.sizes, self.kept, self.min_counts)

    def _observation(self) -> np.ndarray:
        return np.append(self.kept, self.t / self.settings.max_steps).astype(np.float32)


# -------------------------------------------------------------------------------------------- the method


@register("gnnrl")
class GnnRl(PruningMethod):
    """GNN-RL: multi-stage GCN over the hierarchical network graph, PPO on continuous per-group ratios."""

    settings_type = GnnRlSettings
    needs_evaluator = True

    def choose(self, context: MethodContext, budget: Budget, settings: GnnRlSettings) -> MethodResult:
        masks = ScoredMasks(context.cost, budget, filter_l2_scores(context.model, context.groups), context.evaluator)
        env = RatioEnv(context.cost, budget, masks, settings)
        with seeded_global_rngs(context.seed):
            algorithm = _ppo(build_hierarchy(context.model, context.groups), env, settings)
            steps, updates = _train(algorithm, env, settings)
        notes = (f"GNN-RL: PPO, Gaussian std {settings.action_std}, <= {settings.max_steps} steps per episode, "
                 "L2 filter ranking; best feasible mask by search accuracy")
        if masks.best_mask is None:
            # No episode met the budget: scale the closest miss's ratios down until they do (GNN-RL has no
            # such fallback; a method must return a feasible mask).
            closest = env.closest_miss[1] if env.closest_miss else np.ones(len(context.groups))
            masks.score(largest_scaled_counts(context.cost, budget, closest))
            notes += "; no episode met the budget: the closest miss's ratios were scaled down to it"
        return MethodResult(masks.best_mask, {
            "episodes": env.episodes, "episodes_meeting_budget": env.episodes_meeting_budget, "steps": steps,
            "ppo_updates": updates,
            "best_search_top1": masks.best_accuracy, "best_keep_ratios": masks.best_keep_ratios(), "notes": notes,
        })


def _ppo(hierarchy: LayerHierarchy, env: RatioEnv, settings: GnnRlSettings) -> PPO:
    actor = GroupRatiosActor(MultiStageEncoder(hierarchy, settings.hidden, settings.embedding), settings)
    critic = ValueCritic(MultiStageEncoder(hierarchy, settings.hidden, settings.embedding), settings.embedding)
    policy = ProbabilisticActorPolicy(
        actor=actor, dist_fn=fixed_std_gaussian, action_space=env.action_space,
        observation_space=env.observation_space, deterministic_eval=True, action_scaling=False,
        action_bound_method=None,  # the environment clips; the buffer keeps the raw sample for the log-prob
    )
    # Monte-Carlo returns (gae_lambda 1) with advantages normalised per batch, as the published update; its
    # returns were standardised, which Tianshou's return scaling stands in for.
    return PPO(
        policy=policy, critic=critic, optim=AdamOptimizerFactory(lr=settings.lr), eps_clip=settings.eps_clip,
        vf_coef=settings.vf_coef, ent_coef=settings.ent_coef, gae_lambda=1.0, gamma=settings.gamma,
        max_grad_norm=None, advantage_normalization=True, return_scaling=True,
        max_batchsize=settings.update_every_steps,
    )


def _train(algorithm: PPO, env: RatioEnv, settings: GnnRlSettings) -> tuple[int, int]:
    """Collect `update_every_steps` steps (episodes run on across collections), then `update_epochs`
    full-batch PPO epochs; until the evaluations are spent (the collection that spends the last one ends the
    search) or the episode limit is reached. Returns (steps, updates)."""
    # The same env object every time: the search reads its counters and closest miss afterwards.
    envs = DummyVectorEnv([lambda: env])
    collector = Collector(algorithm, envs, VectorReplayBuffer(settings.update_every_steps, 1))
    steps = updates = 0
    while env.episodes < MAX_EPISODES_PER_EVALUATION * env.masks.evaluator.limit and not env.masks.exhausted:
        with policy_within_training_step(algorithm.policy):
            try:
                collected = collector.collect(n_step=settings.update_every_steps, reset_before_collect=steps == 0)
            except EvaluationBudgetExhausted:
                break
            algorithm.update(buffer=collector.buffer, batch_size=None, repeat=settings.update_epochs)
        collector.reset_buffer(keep_statistics=False)
        steps += collected.n_collected_steps
        updates += 1
    envs.close()
    return steps, updates
