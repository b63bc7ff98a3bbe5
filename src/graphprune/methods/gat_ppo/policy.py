"""The agent's networks: a GATv2 encoder over the network graph, a per-channel keep head, a graph critic.

The static graph (features, edges) lives here as buffers; each observation only carries the dynamic state
(kept / decided per channel, budget features, step). No Python loop over nodes or states anywhere.
The `mlp` encoder ablation replaces message passing by per-node layers, on the same code path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv

from graphprune.graph import NetworkGraph
from graphprune.methods.gat_ppo.env import BUDGET_FEATURES, EpisodeLayout

PADDED_LOGIT = -1e4  # not -inf: log-prob and entropy of padded slots must stay finite (Tianshou pitfall 6)
ENCODERS = ("gat", "mlp")
ACTIONS = ("binary", "ratio")
LOG_PROBS = ("mean", "joint")  # of a step's bits, for PPO's ratio: the per-bit mean or the sum (the joint)


@dataclass(frozen=True)
class PolicySettings:
    encoder: str = "gat"
    action: str = "binary"  # "ratio": one continuous keep ratio per group (ablation)
    hidden: int = 32
    heads: int = 2
    layers: int = 2
    # Keep logits start as prior_strength * (a channel's filter-L1 z-score within its group) around the budget's
    # bias: first samples already favour strong filters, and the policy learns where to depart from them.
    prior_strength: float = 2.0
    log_prob: str = "joint"  # "mean" let a shift of every bit at once through the clip: the policy collapsed

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {self.action!r}")
        if self.log_prob not in LOG_PROBS:
            raise ValueError(f"log_prob must be one of {LOG_PROBS}, got {self.log_prob!r}")


class IndependentBernoulli(torch.distributions.Independent):
    """Independent keep bits [B, W] of one step, with two changes to the plain joint distribution:

    - `log_prob` and `entropy` are the *mean* over the step's real (unpadded) bits, not the sum. With the sum,
      PPO's ratio is a product over up to W bits, so its clip lets each bit move by only about eps/W per
      update and a 64-channel group barely learns (Tianshou pitfall 7); the mean clips per bit instead.
    - `mode` is defined at p = 0.5 (Bernoulli's is NaN there).
    """

    def __init__(self, logits: Tensor):
        super().__init__(torch.distributions.Bernoulli(logits=logits), 1)
        self._real_bits = (logits > PADDED_LOGIT / 2).sum(-1).clamp(min=1)  # [B]

    def log_prob(self, value: Tensor) -> Tensor:
        return self.base_dist.log_prob(value).sum(-1) / self._real_bits

    def entropy(self) -> Tensor:
        return self.base_dist.entropy().sum(-1) / self._real_bits

    @property
    def mode(self) -> Tensor:
        return (self.base_dist.logits > 0).float()


class JointBernoulli(IndependentBernoulli):
    """The same bits with the plain joint log-probability and entropy (sums over the step's bits): PPO's clip
    then bounds how far the whole step's decision may move, e.g. a shift of every bit at once."""

    def log_prob(self, value: Tensor) -> Tensor:
        return self.base_dist.log_prob(value).sum(-1)

    def entropy(self) -> Tensor:
        return self.base_dist.entropy().sum(-1)


class GraphEncoder(nn.Module):
    """Node embeddings of a batch of states of one network graph.

    forward(obs) -> (h [B, N, H], budget [B, K]) where obs holds kept [B, C], decided [B, C], budget [B, K].

    Two parts, so that a PPO minibatch of B states costs one attention pass, not B:
    - static: `layers` GATv2 layers (multi-head, edge attributes) over the graph's static features, computed
      once per call for all states (the graph is the same network in every state);
    - dynamic: the state (kept, decided, budget left) diffused over the same edges for `layers` rounds of mean
      aggregation (one sparse product for the whole batch), so each node sees the decisions around it.
    A node's embedding is an MLP of both. The `mlp` ablation drops message passing from both parts.
    """

    def __init__(self, graph: NetworkGraph, settings: PolicySettings):
        super().__init__()
        data = graph.data
        static = data.x.float().clone()
        static[:, graph.dynamic_columns] = 0.0  # the state enters through the dynamic path only
        self.register_buffer("x_static", static)  # [N, F]
        self.register_buffer("edge_index", data.edge_index.long().clone())  # [2, E]
        self.register_buffer("edge_attr", data.edge_attr.float().clone())  # [E, A]
        # Derived from the graph, so not saved with the weights (persistent=False).
        self.register_buffer("mean_adjacency", _mean_adjacency(data.edge_index, graph.num_nodes), persistent=False)
        self.num_channels = graph.num_channel_nodes
        self.num_nodes = graph.num_nodes
        self.encoder = settings.encoder
        self.rounds = settings.layers if settings.encoder == "gat" else 0
        hidden = settings.hidden
        self.input = nn.Sequential(nn.Linear(data.x.shape[1], hidden), nn.ELU())
        if settings.encoder == "gat":
            self.layers = nn.ModuleList(
                GATv2Conv(hidden, hidden // settings.heads, heads=settings.heads, edge_dim=data.edge_attr.shape[1])
                for _ in range(settings.layers)
            )
        else:
            self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(settings.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(settings.layers))
        dynamic_width = (2 + len(BUDGET_FEATURES)) * (self.rounds + 1)
        self.combine = nn.Sequential(nn.Linear(hidden + dynamic_width, hidden), nn.ELU(), nn.LayerNorm(hidden))
        self.dynamic_width = dynamic_width
        self._static_cache: Tensor | None = None

    def static_embedding(self) -> Tensor:
        """[N, H]: attention over the static graph (per-node layers for the `mlp` encoder).

        Without gradients (collecting episodes) the result is reused until `forget_static()`, which the
        training loop calls after each update: it depends on the weights only, not on the state.
        """
        if torch.is_grad_enabled():
            self._static_cache = None
            return self._attend()
        if self._static_cache is None:
            self._static_cache = self._attend()
        return self._static_cache

    def forget_static(self) -> None:
        self._static_cache = None

    def _attend(self) -> Tensor:
        h = self.input(self.x_static)
        for layer, norm in zip(self.layers, self.norms, strict=True):
            update = layer(h, self.edge_index, self.edge_attr) if self.encoder == "gat" else layer(h)
            h = norm(h + nn.functional.elu(update))  # residual keeps the node's own features in view
        return h

    def forward(self, obs, nodes: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Embeddings of `nodes` ([B, W] node ids per state; all nodes when None): ([B, W or N, H], budget [B, K]).

        Only the requested nodes go through the combining MLP: the actor needs the W channels of the step.
        """
        dynamic, budget = self.state_views(obs)
        static = self.static_embedding()  # [N, H]
        if nodes is None:
            joined = torch.cat([static[None].expand(dynamic.shape[0], -1, -1), dynamic], dim=-1)
        else:
            picked = torch.gather(dynamic, 1, nodes[..., None].expand(-1, -1, dynamic.shape[-1]))  # [B, W, D']
            # index_select, not static[nodes]: the latter's backward (index_put_ with accumulate) adds in a
            # thread-timing-dependent order on CPU with more than one thread, so searches were not reproducible.
            chosen = static.index_select(0, nodes.reshape(-1)).reshape(*nodes.shape, -1)  # [B, W, H]
            joined = torch.cat([chosen, picked], dim=-1)
        return self.combine(joined), budget

    def state_views(self, obs) -> tuple[Tensor, Tensor]:
        """The state diffused over the graph: ([B, N, D'] = kept, decided, budget after 0..rounds hops, [B, K])."""
        device = self.x_static.device
        kept = torch.as_tensor(obs.kept, dtype=torch.float32, device=device)  # [B, C]
        decided = torch.as_tensor(obs.decided, dtype=torch.float32, device=device)  # [B, C]
        budget = torch.as_tensor(obs.budget, dtype=torch.float32, device=device)  # [B, K]
        batch = kept.shape[0]
        state = torch.zeros(batch, self.num_nodes, 2, device=device)
        state[:, : self.num_channels, 0] = kept
        state[:, : self.num_channels, 1] = decided
        state = torch.cat([state, budget[:, None, :].expand(-1, self.num_nodes, -1)], dim=-1)  # [B, N, D]
        views = [state]
        for _ in range(self.rounds):
            flat = views[-1].permute(1, 0, 2).reshape(self.num_nodes, -1)  # [N, B*D]
            spread = torch.sparse.mm(self.mean_adjacency, flat)
            views.append(spread.reshape(self.num_nodes, batch, -1).permute(1, 0, 2))
        return torch.cat(views, dim=-1), budget


def _mean_adjacency(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Row-normalised adjacency (mean over in-neighbours, self-loop included) as a sparse [N, N] tensor."""
    loops = torch.arange(num_nodes)
    rows = torch.cat([edge_index[1], loops])
    cols = torch.cat([edge_index[0], loops])
    degree = torch.bincount(rows, minlength=num_nodes).float()
    values = 1.0 / degree[rows]
    indices = torch.stack([rows, cols])
    return torch.sparse_coo_tensor(indices, values, (num_nodes, num_nodes), check_invariants=True).coalesce()


class _StepActor(nn.Module):
    """Finds the channel nodes the current step decides (slot_nodes [T, W]: node ids, -1 = padding); `head`
    maps an embedding + budget features to one number, starting at logit(sqrt(budget))."""

    def __init__(self, encoder: GraphEncoder, layout: EpisodeLayout, budget_ratio: float, hidden: int,
                 channel_prior: np.ndarray | None = None):
        super().__init__()
        self.encoder = encoder
        prior = np.zeros(layout.num_channels) if channel_prior is None else np.asarray(channel_prior, dtype=np.float32)
        self.register_buffer("channel_prior", torch.as_tensor(prior, dtype=torch.float32), persistent=False)  # [C]
        self.head = nn.Sequential(nn.Linear(hidden + len(BUDGET_FEATURES), hidden), nn.ELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.constant_(self.head[-1].bias, _logit_of_sqrt(budget_ratio))
        slots = np.full((len(layout.steps), layout.width), -1, dtype=np.int64)
        for t in range(len(layout.steps)):
            nodes = layout.step_channels(t)  # channel node ids equal flat channel indices
            slots[t, : len(nodes)] = nodes
        self.register_buffer("slot_nodes", torch.as_tensor(slots))

    def step_nodes(self, obs) -> Tensor:
        """[B, W]: the channel node ids the current step decides (-1: padding)."""
        step = torch.as_tensor(obs.step, device=self.slot_nodes.device).long().reshape(-1)
        step = step.clamp(max=self.slot_nodes.shape[0] - 1)  # the terminal observation is never acted on
        return self.slot_nodes[step]

    def step_embeddings(self, obs) -> tuple[Tensor, Tensor, Tensor]:
        """(embeddings [B, W, H] of the step's channels, valid [B, W], budget [B, K])."""
        nodes = self.step_nodes(obs)  # [B, W]
        chosen, budget = self.encoder(obs, nodes.clamp(min=0))
        return chosen, nodes >= 0, budget


def _logit_of_sqrt(budget_ratio: float) -> float:
    """logit(sqrt(budget)): keeping a fraction k of every layer's inputs and outputs keeps about k^2 of the
    FLOPs, so first samples land near the budget instead of at half the channels."""
    keep = min(max(math.sqrt(budget_ratio), 0.05), 0.95)
    return math.log(keep / (1 - keep))


class KeepActor(_StepActor):
    """Keep logits of the channels decided at the current step: forward(obs) -> (logits [B, W], state).

    logit = head(channel embedding, budget) + group_head(mean embedding of the step's channels, budget) + prior:
    the group term moves every bit of a group together, so how much of a group to keep (where most of the
    accuracy lies) gets the summed signal of all its bits instead of each bit's own.
    """

    def __init__(self, encoder: GraphEncoder, layout: EpisodeLayout, budget_ratio: float, hidden: int,
                 channel_prior: np.ndarray | None = None):
        super().__init__(encoder, layout, budget_ratio, hidden, channel_prior)
        self.group_head = nn.Sequential(nn.Linear(hidden + len(BUDGET_FEATURES), hidden), nn.ELU(),
                                        nn.Linear(hidden, 1))
        nn.init.zeros_(self.group_head[-1].weight)
        nn.init.zeros_(self.group_head[-1].bias)

    def forward(self, obs, state=None, info=None) -> tuple[Tensor, None]:
        chosen, valid, budget = self.step_embeddings(obs)  # [B, W, H], [B, W], [B, K]
        features = torch.cat([chosen, budget[:, None, :].expand(-1, chosen.shape[1], -1)], dim=-1)
        weights = valid.float()[..., None]
        pooled = (chosen * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # [B, H]
        group = self.group_head(torch.cat([pooled, budget], dim=-1))  # [B, 1]
        logits = self.head(features).squeeze(-1) + group + self.channel_prior[self.step_nodes(obs).clamp(min=0)]
        return logits.masked_fill(~valid, PADDED_LOGIT), state


class RatioActor(_StepActor):
    """The `ratio` ablation: one keep ratio for the current group from its channels' pooled embeddings.

    forward(obs) -> ((mean [B, 1], std [B, 1]), state) of a Gaussian; the environment clips samples to [0, 1]
    and keeps that fraction of the group's most important channels. Same encoder, same training loop.
    """

    def __init__(self, encoder: GraphEncoder, layout: EpisodeLayout, budget_ratio: float, hidden: int,
                 channel_prior: np.ndarray | None = None):
        super().__init__(encoder, layout, budget_ratio, hidden)  # the ratio action keeps the top-L1 channels
        self.log_std = nn.Parameter(torch.full((1,), math.log(0.15)))

    def forward(self, obs, state=None, info=None) -> tuple[tuple[Tensor, Tensor], None]:
        chosen, valid, budget = self.step_embeddings(obs)
        weights = valid.float()[..., None]
        pooled = (chosen * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # [B, H]
        mean = torch.sigmoid(self.head(torch.cat([pooled, budget], dim=-1)))  # [B, 1]
        return (mean, self.log_std.exp().expand_as(mean)), state


def gaussian_ratio(parameters: tuple[Tensor, Tensor]) -> torch.distributions.Distribution:
    mean, std = parameters
    return torch.distributions.Independent(torch.distributions.Normal(mean, std), 1)


class GraphCritic(nn.Module):
    """State value from a readout of the graph: mean + max over nodes of the static embedding and of the
    diffused state, plus the budget features: [B, 1]. Pooling before the MLP keeps it O(B * N * D')."""

    def __init__(self, encoder: GraphEncoder, hidden: int):
        super().__init__()
        self.encoder = encoder
        width = 2 * hidden + 2 * encoder.dynamic_width + len(BUDGET_FEATURES)
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ELU(), nn.Linear(hidden, 1))

    def forward(self, obs, state=None, info=None) -> Tensor:
        dynamic, budget = self.encoder.state_views(obs)  # [B, N, D'], [B, K]
        static = self.encoder.static_embedding()  # [N, H]
        pooled_static = torch.cat([static.mean(0), static.amax(0)])[None].expand(dynamic.shape[0], -1)
        return self.head(torch.cat([pooled_static, dynamic.mean(1), dynamic.amax(1), budget], dim=-1))
