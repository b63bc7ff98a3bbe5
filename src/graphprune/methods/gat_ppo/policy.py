"""The agent's networks: a GATv2 encoder over the network graph, a per-channel keep head, a graph critic.

The static graph (features, edges) lives here as buffers; each observation only carries the dynamic state
(kept / decided per channel, budget features, step). No Python loop over nodes or states anywhere.
The `mlp` encoder ablation replaces message passing by per-node layers, on the same code path; the
`gat_state` encoder (and its no-attention ablation `mean_state`) runs the message passing over the state too.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv
from torch_geometric.utils import add_self_loops, remove_self_loops

from graphprune.methods.gat_ppo.env import BUDGET_FEATURES, EpisodeLayout
from graphprune.methods.settings import PolicySettings
from graphprune.network.graph import CHANNEL_STATISTICS, NetworkGraph

BUDGET_PRIOR_CLIP = 0.02  # the budget prior's keep fraction stays in [0.02, 0.98]: logits within +-3.9
PADDED_LOGIT = -1e4  # not -inf: log-prob and entropy of padded slots must stay finite (docs/AGENT.md)
# Message passing over the state at every step: with attention (gat_state) or a fixed mean (mean_state).
STATE_ENCODERS = ("gat_state", "mean_state")
STATE_WIDTH = 2 + len(BUDGET_FEATURES)  # a node's state: kept, decided, the budget features
# The largest per-edge temporary of a state-aware GATv2 pass, in floats (4 MiB; see GraphEncoder._edge_blocks).
EDGE_BLOCK_FLOATS = 1 << 20


class IndependentBernoulli(torch.distributions.Independent):
    """Independent keep bits [B, W] of one step, with two changes to the plain joint distribution:

    - `log_prob` and `entropy` are the *mean* over the step's real (unpadded) bits, not the sum. With the sum,
      PPO's ratio is a product over up to W bits, so its clip lets each bit move by only about eps/W per
      update and a 64-channel group barely learns (docs/AGENT.md); the mean clips per bit instead.
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

    `gat` (default) and `mlp`: two parts, so that a PPO minibatch of B states costs one attention pass, not B:
    - static: `layers` GATv2 layers (multi-head, edge attributes) over the graph's static features, computed
      once per call for all states (the graph is the same network in every state);
    - dynamic: the state (kept, decided, budget left) diffused over the same edges for `layers` rounds of mean
      aggregation (one sparse product for the whole batch), so each node sees the decisions around it.
    A node's embedding is an MLP of both. The `mlp` ablation drops message passing from both parts.

    `gat_state` (the paper's encoder) and `mean_state`: the state is part of every node's input, and the
    `layers` message-passing layers run over the B states at every call (one pass for the whole batch, the
    states along a batch axis of the one graph; see `_attention`). `gat_state` uses GATv2 attention, so the
    attention weights see the decisions; `mean_state` is the same layers with every attention weight fixed to
    1 / in-degree (GATv2's message with uniform weights), so `gat_state` vs `mean_state` isolates attention and
    `gat_state` vs `gat` isolates state-aware attention. A node's embedding is an MLP of the layers' output and
    its own state.
    """

    def __init__(self, graph: NetworkGraph, settings: PolicySettings):
        super().__init__()
        data = graph.data
        static = data.x.float().clone()
        static[:, graph.dynamic_columns] = 0.0  # the state enters through the dynamic path only
        if not settings.channel_statistics:
            static[:, [graph.feature_names.index(name) for name in CHANNEL_STATISTICS]] = 0.0
        self.register_buffer("x_static", static)  # [N, F]
        self.register_buffer("edge_index", data.edge_index.long().clone())  # [2, E]
        self.register_buffer("edge_attr", data.edge_attr.float().clone())  # [E, A]
        # The edges GATv2 attends over (one self-loop per node), made once here instead of in every call.
        looped_index, looped_attr = _self_looped(data.edge_index, data.edge_attr.float(), graph.num_nodes)
        self.register_buffer("looped_edge_index", looped_index, persistent=False)  # [2, E']
        self.register_buffer("looped_edge_attr", looped_attr, persistent=False)  # [E', A]
        # Derived from the graph, so not saved with the weights (persistent=False).
        self.register_buffer("mean_adjacency", _mean_adjacency(data.edge_index, graph.num_nodes), persistent=False)
        self.num_channels = graph.num_channel_nodes
        self.num_nodes = graph.num_nodes
        self.encoder = settings.encoder
        self.state_aware = settings.encoder in STATE_ENCODERS
        self.rounds = settings.layers if settings.encoder == "gat" else 0
        hidden = settings.hidden
        inputs = data.x.shape[1] + (STATE_WIDTH if self.state_aware else 0)
        self.input = nn.Sequential(nn.Linear(inputs, hidden), nn.ELU())
        if settings.encoder in ("gat", "gat_state"):
            self.layers = nn.ModuleList(
                GATv2Conv(hidden, hidden // settings.heads, heads=settings.heads, edge_dim=data.edge_attr.shape[1],
                          add_self_loops=False)  # the looped edges above
                for _ in range(settings.layers)
            )
        else:
            self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(settings.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(settings.layers))
        dynamic_width = STATE_WIDTH * (self.rounds + 1)
        self.combine = nn.Sequential(nn.Linear(hidden + dynamic_width, hidden), nn.ELU(), nn.LayerNorm(hidden))
        self.dynamic_width = dynamic_width
        self._static_cache: Tensor | None = None
        self._second_reader: tuple | None = None  # (weights' versions, [N, H]) of the last pass with gradients
        self._views_cache: tuple | None = None  # (obs, state_views(obs)) for the second reader of a minibatch
        self._state_cache: tuple | None = None  # (obs, key, [N, B, H]) of the last state-aware pass
        if settings.encoder == "gat_state":
            source, target, attributes = _attention_edges(data.edge_index, data.edge_attr.float(), graph.num_nodes)
            self.register_buffer("attention_source", source, persistent=False)  # [E'] with one self-loop per node,
            self.register_buffer("attention_target", target, persistent=False)  # sorted by target
            self.register_buffer("attention_edge_attr", attributes, persistent=False)  # [E', A]
            self._in_degree = np.bincount(target.numpy(), minlength=graph.num_nodes)
            self._blocks: dict = {}
        if settings.encoder == "mean_state":  # the neighbours GATv2 attends to: in-edges plus one self-loop
            self.register_buffer("mean_aggregation", _mean_adjacency(remove_self_loops(data.edge_index)[0],
                                                                     graph.num_nodes), persistent=False)

    def static_embedding(self) -> Tensor:
        """[N, H]: attention over the static graph (per-node layers for the `mlp` encoder). It depends on the
        weights only, not on the state:
        - without gradients (collecting episodes) the result is reused until `forget_static()`, which the
          training loop calls after each update;
        - with gradients, a PPO minibatch asks twice with the same weights (actor, then critic): both get the one
          pass, so the two losses' gradients meet at its output and go back through it once.
        """
        if not torch.is_grad_enabled():
            if self._static_cache is None:
                self._static_cache = self._attend()
            return self._static_cache
        self._static_cache = None
        weights = tuple(p._version for p in self.parameters())  # an optimizer step changes them
        if self._second_reader is not None and self._second_reader[0] == weights:
            embedding = self._second_reader[1]
            self._second_reader = None
            return embedding
        embedding = self._attend()
        self._second_reader = (weights, embedding)
        return embedding

    def forget_static(self) -> None:
        self._static_cache = None
        self._second_reader = None
        self._views_cache = None
        self._state_cache = None

    def _attend(self) -> Tensor:
        h = self.input(self.x_static)
        for layer, norm in zip(self.layers, self.norms, strict=True):
            update = layer(h, self.looped_edge_index, self.looped_edge_attr) if self.encoder == "gat" else layer(h)
            h = norm(h + nn.functional.elu(update))  # residual keeps the node's own features in view
        return h

    def state_embedding(self, obs, dynamic: Tensor) -> Tensor:
        """[N, B, H]: the message-passing layers over every node's static features and state (`gat_state`,
        `mean_state`), for the B states of `obs` in one pass; `dynamic` [B, N, D] is `state_views(obs)[0]`.

        In a PPO minibatch the actor and then the critic ask for the same observation object: the second call
        gets the first's result (and its autograd graph, so both losses reach the layers) as long as the
        weights and the gradient mode are unchanged (an optimizer step bumps the weights' versions).
        """
        key = (torch.is_grad_enabled(), tuple(p._version for p in self.parameters()))
        cached = self._state_cache
        if cached is not None and cached[0] is obs and cached[1] == key:
            return cached[2]
        self._state_cache = None  # let the previous pass (and its graph) go before the next one is built
        batch = dynamic.shape[0]
        joined = torch.cat([self.x_static[:, None].expand(-1, batch, -1), dynamic.transpose(0, 1)], dim=-1)
        h = self.input(joined)  # [N, B, H]: nodes first, so a node's rows of all states are one block
        for layer, norm in zip(self.layers, self.norms, strict=True):
            if self.encoder == "gat_state":
                update = self._attention(layer, h)
            else:  # GATv2's message with every attention weight 1 / in-degree: W * mean(neighbours) + b
                update = torch.sparse.mm(self.mean_aggregation, layer(h).reshape(self.num_nodes, -1)).view_as(h)
            h = norm(h + nn.functional.elu(update))
        self._state_cache = (obs, key, h)
        return h

    def _attention(self, conv: GATv2Conv, x: Tensor) -> Tensor:
        """`conv` over B states of the graph at once: x [N, B, F] -> [N, B, heads * C].

        The same numbers as `conv` over PyG's mini-batch of the B disjoint copies (tested), laid out so that the
        copies share one edge list: each edge gathers the rows of all B states at once, and the edge
        attributes are projected once, not B times. The per-edge work runs in blocks of whole target nodes
        (a node's softmax over its incoming edges stays in one block) of at most EDGE_BLOCK_FLOATS floats.
        Rows move by index_select, index_add_ and split only (the softmax's maximum, a scatter_reduce_, is taken
        on detached scores), so the backward pass is deterministic on CPU with several threads (tested).
        """
        nodes, batch = x.shape[:2]
        heads, width = conv.heads, conv.out_channels
        left = conv.lin_l(x).view(nodes, batch, heads, width)  # the message a source sends
        right = conv.lin_r(x).view(nodes, batch, heads, width)  # the target's side of the attention score
        edge = conv.lin_edge(self.attention_edge_attr).view(-1, 1, heads, width)
        node_sizes, edge_sizes, targets = self._edge_blocks(batch * heads * width)
        outputs = []
        for s, x_i, e, t in zip(self.attention_source.split(edge_sizes), right.split(node_sizes),
                                edge.split(edge_sizes), targets, strict=True):
            x_j = left.index_select(0, s)  # gathered per block: one full-size gather was slower (measured)
            hidden = nn.functional.leaky_relu(x_i.index_select(0, t) + x_j + e, conv.negative_slope)
            score = (hidden * conv.att).sum(-1)  # [e, B, heads]
            # Softmax over each target's incoming edges, as torch_geometric.utils.softmax computes it.
            top = score.new_zeros(len(x_i), batch, heads).scatter_reduce_(
                0, t[:, None, None].expand_as(score), score.detach(), "amax", include_self=False)
            weight = (score - top.index_select(0, t)).exp()
            total = weight.new_zeros(top.shape).index_add_(0, t, weight) + 1e-16
            weight = weight / total.index_select(0, t)
            outputs.append(x_j.new_zeros(x_i.shape).index_add_(0, t, x_j * weight[..., None]))
        return torch.cat(outputs).view(nodes, batch, heads * width) + conv.bias

    def _edge_blocks(self, floats_per_edge: int) -> tuple[list[int], list[int], list[Tensor]]:
        """Blocks of consecutive target nodes, each with at most EDGE_BLOCK_FLOATS / floats_per_edge in-edges
        (but at least one node): (nodes per block, edges per block, each block's edge targets numbered from
        the block's first node). Larger temporaries were mmap'ed and handed back to the OS by glibc on every
        free; faulting their pages in again made a 64-state pass about 5x slower (measured)."""
        device = self.attention_target.device
        key = (floats_per_edge, device)
        if key not in self._blocks:
            starts = np.concatenate([[0], np.cumsum(self._in_degree)])  # first in-edge of each node
            limit = max(1, EDGE_BLOCK_FLOATS // floats_per_edge)
            bounds = [0]
            while bounds[-1] < self.num_nodes:
                end = int(np.searchsorted(starts, starts[bounds[-1]] + limit, side="right")) - 1
                bounds.append(min(max(end, bounds[-1] + 1), self.num_nodes))
            edge_sizes = np.diff(starts[bounds]).tolist()
            targets = [t - first for t, first in zip(self.attention_target.split(edge_sizes), bounds, strict=False)]
            self._blocks[key] = (np.diff(bounds).tolist(), edge_sizes, targets)
        return self._blocks[key]

    def forward(self, obs, nodes: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Embeddings of `nodes` ([B, W] node ids per state; all nodes when None): ([B, W or N, H], budget [B, K]).

        Only the requested nodes go through the combining MLP: the actor needs the W channels of the step.
        """
        precomputed = _precomputed(obs, "step_views", nodes)
        if precomputed is not None:  # the actor's minibatch in a PPO update (precompute_views)
            chosen = _rows(self.static_embedding(), nodes)
            return self.combine(torch.cat([chosen, precomputed], dim=-1)), self.budget(obs)
        dynamic, budget = self.state_views(obs)
        batch = dynamic.shape[0]
        if self.state_aware:
            per_state = self.state_embedding(obs, dynamic)  # [N, B, H]
        else:
            static = self.static_embedding()  # [N, H]
        if nodes is None:
            nodes_first = per_state.transpose(0, 1) if self.state_aware else static[None].expand(batch, -1, -1)
            joined = torch.cat([nodes_first, dynamic], dim=-1)
        else:
            picked = torch.gather(dynamic, 1, nodes[..., None].expand(-1, -1, dynamic.shape[-1]))  # [B, W, D']
            if self.state_aware:  # row of (node, state) in [N * B, H]
                rows = nodes * batch + torch.arange(batch, device=nodes.device)[:, None]
                chosen = per_state.reshape(-1, per_state.shape[-1]).index_select(0, rows.reshape(-1))
                chosen = chosen.reshape(*nodes.shape, -1)
            else:
                chosen = _rows(static, nodes)
            joined = torch.cat([chosen, picked], dim=-1)  # [B, W, H + D']
        return self.combine(joined), budget

    @torch.no_grad()
    def precompute_views(self, obs, nodes: Tensor) -> None:
        """Store on `obs` (a Tianshou Batch of B states) what this encoder reads of them that no weight touches,
        so that a PPO update, which reads every state `update_repeats` times, diffuses each state once: the
        diffused state at `nodes` ([B, W] node ids; `step_views` [B, W, D']) and its mean and max over all
        nodes (`pooled_views` [B, 2 D'], the critic's). The same numbers as computing them per minibatch
        (tested); minibatches slice them with the rest of the batch. Not for the state encoders, which read
        every node's state in their message passing."""
        if self.state_aware or len(obs) == 0:
            return
        step_views, pooled = [], []
        for start in range(0, len(obs), _PRECOMPUTE_CHUNK):  # [chunk, N, D'] at a time, as a minibatch is
            dynamic, _ = self._diffuse(obs[start:start + _PRECOMPUTE_CHUNK])
            chunk_nodes = nodes[start:start + _PRECOMPUTE_CHUNK]
            step_views.append(torch.gather(dynamic, 1, chunk_nodes[..., None].expand(-1, -1, dynamic.shape[-1])))
            pooled.append(torch.cat([dynamic.mean(1), dynamic.amax(1)], dim=-1))
        obs.view_nodes = nodes
        obs.step_views = torch.cat(step_views)
        obs.pooled_views = torch.cat(pooled)

    def budget(self, obs) -> Tensor:
        """[B, K]: the budget features of the B states of `obs`."""
        return torch.as_tensor(obs.budget, dtype=torch.float32, device=self.x_static.device)

    def state_views(self, obs) -> tuple[Tensor, Tensor]:
        """The state diffused over the graph: ([B, N, D'] = kept, decided, budget after 0..rounds hops, [B, K]).

        The state encoders have no diffusion (rounds = 0): D' = D, the state itself. With gradients (a PPO
        minibatch), the critic's call for the observation the actor just read gets the actor's result (no
        weights are involved: the same numbers)."""
        cached = self._views_cache
        if cached is not None and cached[0] is obs:
            self._views_cache = None
            return cached[1]
        views = self._diffuse(obs)
        self._views_cache = (obs, views) if torch.is_grad_enabled() else None
        return views

    def _diffuse(self, obs) -> tuple[Tensor, Tensor]:
        device = self.x_static.device
        kept = torch.as_tensor(obs.kept, dtype=torch.float32, device=device)  # [B, C]
        decided = torch.as_tensor(obs.decided, dtype=torch.float32, device=device)  # [B, C]
        budget = self.budget(obs)  # [B, K]
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


# States diffused at once by precompute_views: the size of a default PPO minibatch, so its memory is one's.
_PRECOMPUTE_CHUNK = 128


def _rows(static: Tensor, nodes: Tensor) -> Tensor:
    """[B, W, H]: the rows of `static` [N, H] at `nodes` [B, W]. index_select, not static[nodes]: the latter's
    backward (index_put_ with accumulate) adds in a thread-timing-dependent order on CPU with more than one
    thread, so searches were not reproducible."""
    return static.index_select(0, nodes.reshape(-1)).reshape(*nodes.shape, -1)


def _precomputed(obs, name: str, nodes: Tensor | None = None) -> Tensor | None:
    """The field `name` that `GraphEncoder.precompute_views` stored on `obs`, if it did (for these `nodes`)."""
    stored = getattr(obs, name, None)
    if stored is None or (nodes is not None and not torch.equal(obs.view_nodes, nodes)):
        return None
    return stored


def _mean_adjacency(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Row-normalised adjacency (mean over in-neighbours, self-loop included) as a sparse [N, N] tensor."""
    loops = torch.arange(num_nodes)
    rows = torch.cat([edge_index[1], loops])
    cols = torch.cat([edge_index[0], loops])
    degree = torch.bincount(rows, minlength=num_nodes).float()
    values = 1.0 / degree[rows]
    indices = torch.stack([rows, cols])
    return torch.sparse_coo_tensor(indices, values, (num_nodes, num_nodes), check_invariants=True).coalesce()


def _self_looped(edge_index: Tensor, edge_attr: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """The edges GATv2Conv attends over, as its `add_self_loops` makes them in every call: self-loops replaced
    by one per node, whose attribute is the mean of the node's incoming ones (fill_value 'mean')."""
    edge_index, edge_attr = remove_self_loops(edge_index.long(), edge_attr)
    return add_self_loops(edge_index, edge_attr, fill_value="mean", num_nodes=num_nodes)


def _attention_edges(edge_index: Tensor, edge_attr: Tensor, num_nodes: int) -> tuple[Tensor, Tensor, Tensor]:
    """`_self_looped` edges sorted by target (stable): (source [E'], target [E'], attributes [E', A])."""
    edge_index, edge_attr = _self_looped(edge_index, edge_attr, num_nodes)
    order = torch.argsort(edge_index[1], stable=True)
    return edge_index[0, order].contiguous(), edge_index[1, order].contiguous(), edge_attr[order].contiguous()


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

    def precompute_views(self, obs) -> None:
        """Diffuse the states of `obs` once for a PPO update (`GraphEncoder.precompute_views`)."""
        self.encoder.precompute_views(obs, self.step_nodes(obs).clamp(min=0))

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
                 channel_prior: np.ndarray | None = None, budget_prior: bool = False):
        super().__init__(encoder, layout, budget_ratio, hidden, channel_prior)
        self.group_head = nn.Sequential(nn.Linear(hidden + len(BUDGET_FEATURES), hidden), nn.ELU(),
                                        nn.Linear(hidden, 1))
        nn.init.zeros_(self.group_head[-1].weight)
        nn.init.zeros_(self.group_head[-1].bias)
        self.budget_prior = budget_prior
        if budget_prior:  # the prior, not a constant bias, places the first samples at the budget
            nn.init.zeros_(self.head[-1].bias)

    def forward(self, obs, state=None, info=None) -> tuple[Tensor, None]:
        chosen, valid, budget = self.step_embeddings(obs)  # [B, W, H], [B, W], [B, K]
        features = torch.cat([chosen, budget[:, None, :].expand(-1, chosen.shape[1], -1)], dim=-1)
        weights = valid.float()[..., None]
        pooled = (chosen * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # [B, H]
        group = self.group_head(torch.cat([pooled, budget], dim=-1))  # [B, 1]
        logits = self.head(features).squeeze(-1) + group + self.channel_prior[self.step_nodes(obs).clamp(min=0)]
        if self.budget_prior:
            logits = logits + _budget_logit(obs.keep_to_budget, logits.device)
        return logits.masked_fill(~valid, PADDED_LOGIT), state


def _budget_logit(keep_to_budget, device: torch.device) -> Tensor:
    """[B, 1]: logit of the keep fraction that lands the rest of the episode on the budget (clipped away from 0
    and 1, so the policy can still depart from it): a prior that tracks the budget along the episode, so
    groups decided after an over-generous start keep fewer channels."""
    q = torch.as_tensor(keep_to_budget, dtype=torch.float32, device=device).reshape(-1, 1)
    q = q.clamp(BUDGET_PRIOR_CLIP, 1 - BUDGET_PRIOR_CLIP)
    return torch.log(q / (1 - q))


class RatioActor(_StepActor):
    """The `ratio` ablation: one keep ratio for the current group from its channels' pooled embeddings.

    forward(obs) -> ((mean [B, 1], std [B, 1]), state) of a Gaussian; the environment clips samples to [0, 1]
    and keeps that fraction of the group's channels, the highest `policy.prior_score` first (the binary agent's
    channel prior, as a ranking). Same encoder, same training loop, same repair; with `budget_prior` the mean
    starts at the keep fraction that lands the episode on the budget, as the binary agent's keep probabilities.
    """

    def __init__(self, encoder: GraphEncoder, layout: EpisodeLayout, budget_ratio: float, hidden: int,
                 budget_prior: bool = False):
        super().__init__(encoder, layout, budget_ratio, hidden)
        self.log_std = nn.Parameter(torch.full((1,), math.log(0.15)))
        self.budget_prior = budget_prior
        if budget_prior:
            nn.init.zeros_(self.head[-1].bias)

    def forward(self, obs, state=None, info=None) -> tuple[tuple[Tensor, Tensor], None]:
        chosen, valid, budget = self.step_embeddings(obs)
        weights = valid.float()[..., None]
        pooled = (chosen * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # [B, H]
        logit = self.head(torch.cat([pooled, budget], dim=-1))  # [B, 1]
        if self.budget_prior:
            logit = logit + _budget_logit(obs.keep_to_budget, logit.device)
        mean = torch.sigmoid(logit)
        return (mean, self.log_std.exp().expand_as(mean)), state


def gaussian_ratio(parameters: tuple[Tensor, Tensor]) -> torch.distributions.Distribution:
    mean, std = parameters
    return torch.distributions.Independent(torch.distributions.Normal(mean, std), 1)


class GraphCritic(nn.Module):
    """State value from a readout of the graph: mean + max over nodes of the static embedding (of each state's
    node embeddings for the state encoders, the actor's pass reused) and of the diffused state, plus the budget
    features: [B, 1]. Pooling before the MLP keeps it O(B * N * D')."""

    def __init__(self, encoder: GraphEncoder, hidden: int):
        super().__init__()
        self.encoder = encoder
        width = 2 * hidden + 2 * encoder.dynamic_width + len(BUDGET_FEATURES)
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ELU(), nn.Linear(hidden, 1))

    def forward(self, obs, state=None, info=None) -> Tensor:
        pooled_views = _precomputed(obs, "pooled_views")  # [B, 2 D'] in a PPO update (precompute_views)
        if pooled_views is None:
            dynamic, budget = self.encoder.state_views(obs)  # [B, N, D'], [B, K]
            pooled_views = torch.cat([dynamic.mean(1), dynamic.amax(1)], dim=-1)
        else:
            budget = self.encoder.budget(obs)
        if self.encoder.state_aware:
            per_state = self.encoder.state_embedding(obs, dynamic)  # [N, B, H]
            pooled_static = torch.cat([per_state.mean(0), per_state.amax(0)], dim=-1)
        else:
            static = self.encoder.static_embedding()  # [N, H]
            pooled_static = torch.cat([static.mean(0), static.amax(0)])[None].expand(budget.shape[0], -1)
        return self.head(torch.cat([pooled_static, pooled_views, budget], dim=-1))
