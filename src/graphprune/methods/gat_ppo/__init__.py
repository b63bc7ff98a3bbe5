"""`gat_ppo`: the paper's method (docs/AGENT.md) behind the common PruningMethod interface.

env.py is the CMDP, policy.py the GAT actor/critic, reward.py the self-competition reward and Lagrange
multiplier, agent.py the PPO training loop. This module only wires them to a MethodContext.
"""

from __future__ import annotations

import numpy as np

from graphprune.errors import GraphpruneError
from graphprune.methods.base import MethodContext, MethodResult, PruningMethod, register
from graphprune.methods.gat_ppo.agent import GatPpoSearch, SearchResult
from graphprune.methods.heuristics import filter_l1_scores
from graphprune.methods.rl_common import preserved_global_rngs
from graphprune.methods.settings import AgentSettings
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
        graph, order, context.cost, budget, context.evaluator, repair_scores(context), settings,
        seed=context.seed, out_dir=context.out_dir, min_channels=context.groups.min_channels,
    )


def search_result(search: GatPpoSearch, result: SearchResult, **extra) -> MethodResult:
    """The method's result: the best mask, with the search record and the final greedy policy's accuracy."""
    _, greedy_top1 = search.greedy_mask()
    record = {"episodes": result.episodes,
              "search_top1": result.search_top1, "greedy_policy_search_top1": greedy_top1,
              "notes": f"stopped on {result.record['stop_reason']}", **result.record, **extra}
    return MethodResult(result.mask, record)


def repair_scores(context: MethodContext) -> list[np.ndarray]:
    """Filter L1 norms divided by their group's mean, so the global ranking compares like with like.

    Repair drops the least important kept channels by these static scores: Tianshou hands the environment
    only the sampled bits, not the policy's logits.
    """
    return [s / max(float(s.mean()), 1e-12) for s in filter_l1_scores(context.model, context.groups)]
