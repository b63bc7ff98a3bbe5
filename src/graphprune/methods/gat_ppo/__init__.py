"""`gat_ppo`: the paper's method (docs/AGENT.md) behind the common PruningMethod interface.

env.py is the CMDP, policy.py the GAT actor/critic, reward.py the self-competition reward and Lagrange
multiplier, agent.py the PPO training loop. This module only wires them to a MethodContext.
"""

from __future__ import annotations

import numpy as np

from graphprune.errors import GraphpruneError
from graphprune.methods.base import MethodContext, MethodResult, PruningMethod, register
from graphprune.methods.gat_ppo.agent import GatPpoSearch, SearchResult
from graphprune.methods.importance import consumer_l1_scores, get_importance
from graphprune.methods.rl_common import preserved_global_rngs
from graphprune.methods.settings import CONTRIBUTION, AgentSettings
from graphprune.network.cost import Budget
from graphprune.network.graph import topological_group_order


@register("gat_ppo")
class GatPpo(PruningMethod):
    """PPO agent with a GATv2 policy over the network graph, binary keep decisions per channel."""

    settings_type = AgentSettings
    needs_evaluator = True
    needs_graph = True
    draws_progress = True  # iterations with best accuracy and multiplier

    def choose(self, context: MethodContext, budget: Budget, settings: AgentSettings) -> MethodResult:
        with preserved_global_rngs():  # the search seeds the global generators Tianshou draws from
            search = build_search(context, budget, settings)
            try:
                return search_result(search, search.run())
            finally:
                search.close()


def build_search(context: MethodContext, budget: Budget, settings: AgentSettings) -> GatPpoSearch:
    """The agent of `settings` on the context's network (graph, cost, evaluator) and `budget`."""
    if context.out_dir is None:
        raise GraphpruneError("gat_ppo needs an output folder for its checkpoint and search log")
    graph = context.graph
    if graph is None:
        raise GraphpruneError("gat_ppo needs the network graph; build it with `graphprune graph`")
    if tuple(graph.group_sizes) != context.groups.sizes:
        raise GraphpruneError("the graph was built for another network; rebuild it with `graphprune graph`")
    order = topological_group_order(graph.group_roots, graph.layer_names)
    return GatPpoSearch(
        graph, order, context.cost, budget, context.evaluator,
        repair_scores(context, settings.policy.prior_score), settings,
        seed=context.seed, out_dir=context.out_dir, min_channels=context.groups.min_channels,
    )


def search_result(search: GatPpoSearch, result: SearchResult, **extra) -> MethodResult:
    """The method's result: the best mask, with the search record and the final greedy policy's accuracy."""
    _, greedy_top1 = search.greedy_mask()
    record = {"episodes": result.episodes,
              "search_top1": result.search_top1, "greedy_policy_search_top1": greedy_top1,
              "notes": f"stopped on {result.record['stop_reason']}", **result.record, **extra}
    return MethodResult(result.mask, record)


def repair_scores(context: MethodContext, prior_score: str = "filter_l1") -> list[np.ndarray]:
    """Per channel, the score the policy's prior and repair read (`policy.prior_score`), divided by its group's
    mean so the global ranking compares like with like: a channel importance (filter L1 norms by default), or
    the graph's `contribution`.

    Repair drops the least important kept channels by these static scores: Tianshou hands the environment
    only the sampled bits, not the policy's logits.
    """
    if prior_score == CONTRIBUTION:
        scores = [_floored(score) for score in contribution_scores(context)]
    else:
        scores = get_importance(prior_score)(context.model, context.groups)
    return [s / max(float(s.mean()), 1e-12) for s in scores]


def contribution_scores(context: MethodContext) -> list[np.ndarray]:
    """Per group, [size]: a first-order size of what each channel adds downstream: the RMS of its activation on
    the graph's calibration images (at its BatchNorm's output) x the mean |w| of the weights reading it. Zero
    for a channel its consumers ignore or that is constant zero, however large its filter."""
    mean, std = context.graph.channel_feature("act_mean"), context.graph.channel_feature("act_std")
    return [reads * np.sqrt(m.double().numpy() ** 2 + s.double().numpy() ** 2)
            for reads, m, s in zip(consumer_l1_scores(context.model, context.groups), mean, std, strict=True)]


# A channel that adds nothing downstream scores this share of its group's median, not 0: its log (the prior's
# z-score) stays a few units below the rest instead of stretching the group's spread so far that the other
# channels' differences vanish.
CONTRIBUTION_FLOOR = 0.01


def _floored(scores: np.ndarray) -> np.ndarray:
    return np.maximum(scores, CONTRIBUTION_FLOOR * max(float(np.median(scores)), 1e-12))
