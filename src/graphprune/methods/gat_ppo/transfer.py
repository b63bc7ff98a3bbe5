"""`gat_ppo_transfer`: prune a network with a shared agent trained on other networks (docs/TRANSFER.md).

The agent file (graphprune train-agent, `shared.py`) holds the policy's weights and settings; they are read onto
this network's graph, the greedy policy's mask takes the first evaluation, and the policy samples the rest
(learning on them only with `keep_training`). Equal search budgets hold as for every method: the evaluations
are counted by the context's BudgetedEvaluator.
"""

from __future__ import annotations

from graphprune.methods.base import MethodContext, MethodResult, PruningMethod, register
from graphprune.methods.gat_ppo import build_search, search_result
from graphprune.methods.gat_ppo.shared import load_agent
from graphprune.methods.settings import TransferSettings
from graphprune.network.cost import Budget


@register("gat_ppo_transfer")
class GatPpoTransfer(PruningMethod):
    """A trained shared agent's greedy mask, then samples of its policy, best of them returned."""

    settings_type = TransferSettings
    needs_evaluator = True
    needs_graph = True
    draws_progress = True

    def choose(self, context: MethodContext, budget: Budget, settings: TransferSettings) -> MethodResult:
        agent = load_agent(settings.agent)
        search = build_search(context, budget, agent.settings)
        try:
            search.adopt(agent.weights, margin_fraction=agent.margin_fraction, learn=settings.keep_training,
                         source=settings.agent)
            greedy_first = search.start_from_greedy()
            return search_result(search, search.run(), agent=settings.agent, agent_networks=agent.networks,
                                 agent_budgets=agent.budgets, greedy_first_search_top1=greedy_first)
        finally:
            search.close()
