"""Every result and log path of the pipeline, built in one place for the package and the Snakemake rules.

Paths are plain strings joined with '/', so Snakemake wildcards pass through untouched:
`ResultPaths("results", "{experiment}").mask("{method}", "{target}", "{seed}")` is
`results/{experiment}/{method}/{target}/seed{seed}/mask.pt`. This module only names files; it never creates or
reads them.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

# File names inside a search folder (and a shared agent's folder), also used by the agent that writes them.
AGENT_CHECKPOINT = "agent.pt"
SEARCH_LOG = "log.csv"
SEARCH_ITERATIONS = "iterations.csv"


def agent_dir(root: str, name: str) -> str:
    """Folder of the shared agent `name` (graphprune train-agent): agent.pt, its training log and its tasks."""
    return posixpath.join(root, "agents", name)


def agent_path(root: str, name: str) -> str:
    return posixpath.join(agent_dir(root, name), AGENT_CHECKPOINT)


def agent_log(logs_root: str, name: str, suffix: str = "log") -> str:
    """The train_agent job's log (suffix "log") or Snakemake benchmark file ("benchmark.tsv")."""
    return posixpath.join(logs_root, "agents", f"{name}.{suffix}")


@dataclass(frozen=True)
class ResultPaths:
    """Paths of one experiment's artifacts under `root` and of its logs under `logs_root`."""

    root: str
    experiment: str
    logs_root: str = "logs"

    def experiment_dir(self) -> str:
        return posixpath.join(self.root, self.experiment)

    # pretrain
    def baseline_dir(self) -> str:
        return posixpath.join(self.experiment_dir(), "baseline")

    def baseline_model(self) -> str:
        return posixpath.join(self.baseline_dir(), "model.pt")

    def baseline_metrics(self) -> str:
        return posixpath.join(self.baseline_dir(), "metrics.json")

    def baseline_history(self) -> str:
        return posixpath.join(self.baseline_dir(), "history.csv")

    # graph extraction
    def graph(self) -> str:
        return posixpath.join(self.experiment_dir(), "graph.pt")

    def graph_summary(self) -> str:
        return posixpath.join(self.experiment_dir(), "graph.json")

    # search and fine-tuning, one folder per (method, target, seed)
    def method_dir(self, method: str, target: str, seed: int | str) -> str:
        return posixpath.join(self.experiment_dir(), method, target, f"seed{seed}")

    def search_dir(self, method: str, target: str, seed: int | str) -> str:
        return posixpath.join(self.method_dir(method, target, seed), "search")

    def search_record(self, method: str, target: str, seed: int | str) -> str:
        return posixpath.join(self.search_dir(method, target, seed), "record.json")

    def search_iterations(self, method: str, target: str, seed: int | str) -> str:
        """Per-iteration statistics of a learning search (gat_ppo): sampled accuracy, greedy policy, PPO's own."""
        return posixpath.join(self.search_dir(method, target, seed), SEARCH_ITERATIONS)

    def search_log(self, method: str, target: str, seed: int | str) -> str:
        """Per-episode log of a search, written by the methods that learn (gat_ppo); others write none."""
        return posixpath.join(self.search_dir(method, target, seed), SEARCH_LOG)

    def mask(self, method: str, target: str, seed: int | str) -> str:
        return posixpath.join(self.method_dir(method, target, seed), "mask.pt")

    def finetuned_dir(self, method: str, target: str, seed: int | str) -> str:
        return posixpath.join(self.method_dir(method, target, seed), "finetuned")

    def finetuned_model(self, method: str, target: str, seed: int | str) -> str:
        return posixpath.join(self.finetuned_dir(method, target, seed), "model.pt")

    def finetuned_metrics(self, method: str, target: str, seed: int | str) -> str:
        return posixpath.join(self.finetuned_dir(method, target, seed), "metrics.json")

    def finetuned_history(self, method: str, target: str, seed: int | str) -> str:
        return posixpath.join(self.finetuned_dir(method, target, seed), "history.csv")

    # logs and Snakemake benchmark files; per (method, target, seed) when all three are given
    def log(self, step: str, method: str | None = None, target: str | None = None,
            seed: int | str | None = None) -> str:
        return posixpath.join(self._log_dir(method, target, seed), f"{step}.log")

    def benchmark(self, step: str, method: str | None = None, target: str | None = None,
                  seed: int | str | None = None) -> str:
        return posixpath.join(self._log_dir(method, target, seed), f"{step}.benchmark.tsv")

    def _log_dir(self, method: str | None, target: str | None, seed: int | str | None) -> str:
        given = (method is not None, target is not None, seed is not None)
        if any(given) and not all(given):
            raise ValueError("give method, target and seed, or none of them")
        parts = [self.logs_root, self.experiment] + ([method, target, f"seed{seed}"] if all(given) else [])
        return posixpath.join(*parts)


def training_checkpoint(run_dir: str) -> str:
    """The resumable state (`last.pt`) of a training run that writes into `run_dir`."""
    return posixpath.join(run_dir, "last.pt")


def training_history(run_dir: str) -> str:
    return posixpath.join(run_dir, "history.csv")


# Results across experiments (the report stage)
def summary_csv(root: str) -> str:
    return posixpath.join(root, "summary.csv")


def summary_md(root: str) -> str:
    return posixpath.join(root, "summary.md")


def significance_csv(root: str) -> str:
    """Per experiment, target and stage: the best method, the runner-up and Welch's t-test between them."""
    return posixpath.join(root, "significance.csv")


def figures_dir(root: str) -> str:
    return posixpath.join(root, "figures")


def report_html(root: str) -> str:
    return posixpath.join(root, "report.html")


# The report's figures by name; each has a caption workflow/report/<name>.rst.
REPORT_FIGURES = ("accuracy_vs_flops", "search_curves", "learning_curves", "kept_channels")


def figure(root: str, name: str) -> str:
    return posixpath.join(figures_dir(root), f"{name}.png")


def report_log(logs_root: str = "logs") -> str:
    return posixpath.join(logs_root, "report.log")


def report_benchmark(logs_root: str = "logs") -> str:
    return posixpath.join(logs_root, "report.benchmark.tsv")
