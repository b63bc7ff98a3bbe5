"""The `train-agent` stage: train a shared agent (config `agents.<name>`) on its experiments' baselines and
graphs at its budgets; write <results_dir>/agents/<name>/agent.pt (weights and settings, no pickled objects),
agent.json (what it saw, how long it took), training.csv and one search folder per task (docs/TRANSFER.md).

Every task scores masks on its experiment's search split only, as a search does; test images are never read.
"""

from __future__ import annotations

import logging
from pathlib import Path

from graphprune.checkpoint import atomic_write_json
from graphprune.config import Config
from graphprune.errors import GraphpruneError
from graphprune.methods.base import MethodContext
from graphprune.methods.settings import AgentSettings, parse_settings
from graphprune.network.cost import parse_target
from graphprune.paths import AGENT_CHECKPOINT, agent_dir
from graphprune.stages.search import load_setup

log = logging.getLogger(__name__)


def train_agent(config: Config, name: str, device: str | None = None) -> dict:
    """Train (or resume training) the agent `name`; returns its record (also written to agent.json)."""
    # torch-geometric and Tianshou: only when training
    from graphprune.methods.gat_ppo.shared import SharedAgentTrainer, TrainingTask

    agent = config.agent(name)
    settings = parse_settings(AgentSettings, agent.settings, f"agents.{name}.settings")
    tasks = []
    for experiment_name in agent.experiments:
        experiment = config.experiment(experiment_name)
        setup = load_setup(config, experiment, device)
        if setup.graph is None:
            raise GraphpruneError(f"agent {name} trains on {experiment_name}, which has no graph yet; run "
                                  f"`graphprune graph --experiment {experiment_name}`")
        network = {"experiment": experiment_name, "model": experiment.model.name, "dataset": experiment.dataset.name,
                   "channels": sum(setup.groups.sizes), "groups": len(setup.groups.sizes)}
        for budget in agent.budgets:
            context = MethodContext(setup.model, setup.groups, setup.cost, setup.graph, setup.evaluator)
            tasks.append(TrainingTask(experiment_name, context, parse_target(budget), network))
    out_dir = Path(agent_dir(config.results_dir, name))
    trainer = SharedAgentTrainer(tasks, settings, agent.iterations, agent.seed, out_dir)
    try:
        record = trainer.run()
    finally:
        trainer.close()
    atomic_write_json({"agent": name, **record}, out_dir / "agent.json")
    log.info("wrote %s", out_dir / AGENT_CHECKPOINT)
    return record
