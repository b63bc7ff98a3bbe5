"""One agent for many networks: train a gat_ppo policy on several (network, budget) tasks, save it as a file.

Nothing in the policy's weights depends on one network: node features are normalised per network, the budget
enters as features and through the budget prior (keep logits aimed at the budget), and the graph itself lives
in per-network buffers. Training keeps one GatPpoSearch per task (its environments, self-competition record,
multiplier and margin: each task competes with itself) and passes the weights and optimizer state from task to
task, round-robin, one PPO iteration each. docs/TRANSFER.md.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from graphprune.atomic import atomic_write_text
from graphprune.checkpoint import atomic_torch_save, load_checkpoint
from graphprune.errors import GraphpruneError
from graphprune.methods.base import BudgetedEvaluator, MethodContext
from graphprune.methods.gat_ppo import build_search
from graphprune.methods.gat_ppo.agent import GatPpoSearch
from graphprune.methods.settings import AgentSettings, parse_settings
from graphprune.network.cost import Budget
from graphprune.paths import AGENT_CHECKPOINT

log = logging.getLogger(__name__)

AGENT_FORMAT = "graphprune-agent/1"
ROUND_FILE = "round.txt"  # rounds every task has finished and saved; written after all task checkpoints
TRAINING_LOG = "training.csv"
TRAINING_COLUMNS = ("round", "task", "masks_evaluated", "sampled_mean", "best_search_top1", "greedy_search_top1",
                    "repaired_share", "multiplier", "budget_margin", "entropy", "approx_kl")


@dataclass(frozen=True)
class TrainingTask:
    """One network at one budget: `context` as a search gets it (its evaluator need not be budgeted)."""

    name: str  # the experiment, for logs and the agent's record
    context: MethodContext
    budget: Budget
    network: dict  # what the agent file records about the network (model, dataset, channels)


@dataclass(frozen=True)
class AgentFile:
    """A trained shared agent as read back from its file."""

    settings: AgentSettings
    weights: dict[str, torch.Tensor]
    margin_fraction: float  # the budget margin it ended with, as a fraction of the budget (its tasks' mean)
    networks: list[dict]
    budgets: list[str]
    record: dict


class SharedAgentTrainer:
    """Trains one agent on every task for `iterations` rounds; `run()` resumes from `out_dir` where it can."""

    def __init__(self, tasks: list[TrainingTask], settings: AgentSettings, iterations: int, seed: int,
                 out_dir: str | Path):
        if not tasks:
            raise GraphpruneError("a shared agent needs at least one (network, budget) task")
        if not settings.policy.budget_prior:
            raise GraphpruneError("a shared agent needs policy.budget_prior: true")
        self.tasks, self.settings, self.iterations, self.seed = tasks, settings, iterations, seed
        self.out_dir = Path(out_dir)
        self.searches = self._build()

    def _build(self) -> list[GatPpoSearch]:
        searches = []
        for task in self.tasks:
            # Every task may score one new mask per episode of its iterations: training is not a search budget.
            evaluator = BudgetedEvaluator(task.context.evaluator, self.iterations * self.settings.episodes_per_iteration)
            context = MethodContext(task.context.model, task.context.groups, task.context.cost, task.context.graph,
                                    evaluator, seed=self.seed, out_dir=self.out_dir / "tasks" / self._task_dir(task))
            searches.append(build_search(context, task.budget, self.settings))
        for search in searches[1:]:  # one agent: every task starts from the first task's initial weights
            search.share_from(searches[0])
        return searches

    @staticmethod
    def _task_dir(task: TrainingTask) -> str:
        return f"{task.name}-{task.budget}"

    def run(self, stop_after_rounds: int | None = None) -> dict:
        """Train (resuming a finished round if one is saved); write agent.pt and training.csv; the record."""
        done = self._resume()
        started = time.perf_counter() - self._seconds()
        total = self.iterations * len(self.searches)
        progress = tqdm(total=total, initial=done * len(self.searches), desc="train agent", unit="iteration",
                        dynamic_ncols=True)
        previous = self.searches[-1]
        for round_index in range(done, self.iterations):
            for search in self.searches:
                if search is not previous:
                    search.share_from(previous)
                search.iterate(self.settings.episodes_per_iteration, started=started)
                previous = search
                progress.update(1)
                progress.set_postfix(task=search.out_dir.name, sampled=f"{search.iteration_rows[-1]['sampled_mean']:.3f}")
            for search in self.searches:
                search.save_checkpoint()
            atomic_write_text(f"{round_index + 1}\n", self.out_dir / ROUND_FILE)
            atomic_write_text(self._training_log(), self.out_dir / TRAINING_LOG)
            if stop_after_rounds is not None and round_index + 1 >= stop_after_rounds:
                break
        progress.close()
        return self._save_agent(time.perf_counter() - started)

    def close(self) -> None:
        for search in self.searches:
            search.close()

    def _resume(self) -> int:
        """Rounds already done: every task resumes from its checkpoint of the last finished round, or all start over."""
        marker = self.out_dir / ROUND_FILE
        if not marker.is_file():
            return 0
        text = marker.read_text().strip()
        done = int(text) if text.isdigit() else 0  # unreadable: no round counts as done
        for search in self.searches:
            search.resume()
        if any(search.iteration != done for search in self.searches):
            log.warning("%s: the task checkpoints are not all at round %d (interrupted while saving, or other "
                        "settings): training starts over", self.out_dir, done)
            self.close()
            self.searches = self._build()
            return 0
        return done

    def _seconds(self) -> float:
        return max(search.seconds for search in self.searches)

    def _training_log(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=TRAINING_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        rows = [(row["iteration"], search.out_dir.name, row) for search in self.searches for row in search.iteration_rows]
        for round_index, task, row in sorted(rows, key=lambda r: r[0]):
            writer.writerow({**row, "round": round_index, "task": task})
        return out.getvalue()

    def _save_agent(self, seconds: float) -> dict:
        last = self.searches[-1]  # holds the weights after the latest update
        record = {
            "format": AGENT_FORMAT, "settings": self.settings.to_dict(), "seed": self.seed,
            "iterations": self.iterations, "rounds_done": min(s.iteration for s in self.searches),
            "networks": [task.network for task in self.tasks], "budgets": sorted({str(t.budget) for t in self.tasks}),
            "tasks": [self._task_dir(task) for task in self.tasks],
            "episodes": sum(len(s.log_rows) for s in self.searches), "seconds": seconds,
            "threads": torch.get_num_threads(),
            "margin_fraction": float(np.mean([s.margin.value / t.budget.ratio
                                              for s, t in zip(self.searches, self.tasks, strict=True)])),
            "final_sampled_mean": {s.out_dir.name: s.iteration_rows[-1]["sampled_mean"] for s in self.searches},
        }
        atomic_torch_save({**record, "weights": last.weights()}, self.out_dir / AGENT_CHECKPOINT)
        return record


def load_agent(path: str | Path) -> AgentFile:
    """Read an agent.pt (weights only: `weights_only=True`, no pickled objects); a GraphpruneError says what is
    wrong with a missing, corrupt or foreign file."""
    state = load_checkpoint(path)
    if state.get("format") != AGENT_FORMAT:
        raise GraphpruneError(f"{path} is not a graphprune agent (format {state.get('format')!r}, expected "
                              f"{AGENT_FORMAT!r}); write one with `graphprune train-agent`")
    missing = [key for key in ("settings", "weights", "margin_fraction", "networks", "budgets") if key not in state]
    if missing:
        raise GraphpruneError(f"{path} lacks {', '.join(missing)}: an incomplete agent file; train it again with "
                              "`graphprune train-agent`")
    settings = parse_settings(AgentSettings, state["settings"], f"{path}: settings")
    return AgentFile(settings, dict(state["weights"]), float(state["margin_fraction"]), list(state["networks"]),
                     list(state["budgets"]), {k: v for k, v in state.items() if k != "weights"})
