"""`gat_ppo`: the paper's method (docs/AGENT.md) behind the common PruningMethod interface.

env.py is the CMDP, policy.py the GAT actor/critic, reward.py the self-competition reward and Lagrange
multiplier, agent.py the PPO training loop. This module only wires them to a MethodContext.
"""

from __future__ import annotations

import numpy as np

from graphprune.cost import Budget
from graphprune.errors import GraphpruneError
from graphprune.graph import topological_group_order
from graphprune.method_settings import AgentSettings
from graphprune.methods.base import MethodContext, MethodResult, PruningMethod, register
from graphprune.methods.gat_ppo.agent import GatPpoSearch
from graphprune.methods.heuristics import filter_l1_scores


@register("gat_ppo")
class GatPpo(PruningMethod):
    """PPO agent with a GATv2 policy over the network graph, binary keep decisions per channel."""

    settings_type = AgentSettings
    needs_evaluator = True
    needs_graph = True
    draws_progress = True  # iterations with best accuracy and multiplier

    def choose(self, context: MethodContext, budget: Budget, settings: AgentSettings) -> MethodResult:
        if context.out_dir is None:
            raise GraphpruneError("gat_ppo needs an output folder for its checkpoint and search log")
        graph = context.graph
        if tuple(graph.group_sizes) != context.groups.sizes:
            raise GraphpruneError("the graph was built for another network; rebuild it with `graphprune graph`")
        order = topological_group_order(graph.group_roots, graph.layer_names)
        search = GatPpoSearch(
            graph, order, context.cost, budget, context.evaluator, repair_scores(context), settings,
            seed=context.seed, out_dir=context.out_dir, min_channels=context.groups.min_channels,
        )
        try:
            result = search.run()
            _, greedy_top1 = search.greedy_mask()
        finally:
            search.close()
        record = {"episodes": result.episodes,
                  "search_top1": result.search_top1, "greedy_policy_search_top1": greedy_top1,
                  "notes": f"stopped on {result.record['stop_reason']}", **result.record}
        return MethodResult(result.mask, record)


def repair_scores(context: MethodContext) -> list[np.ndarray]:
    """Filter L1 norms divided by their group's mean, so the global ranking compares like with like.

    Repair drops the least important kept channels by these static scores: Tianshou hands the environment
    only the sampled bits, not the policy's logits.
    """
    return [s / max(float(s.mean()), 1e-12) for s in filter_l1_scores(context.model, context.groups)]
