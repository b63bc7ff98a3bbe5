"""Every result and log path of the pipeline, built in one place for the package and the Snakemake rules.

Paths are plain strings joined with '/', so Snakemake wildcards pass through untouched:
`ResultPaths("results", "{experiment}").mask("{method}", "{target}")` is
`results/{experiment}/{method}/{target}/mask.pt`. This module only names files; it never creates or reads them.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass


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

    # search and fine-tuning, one folder per (method, target)
    def method_dir(self, method: str, target: str) -> str:
        return posixpath.join(self.experiment_dir(), method, target)

    def search_dir(self, method: str, target: str) -> str:
        return posixpath.join(self.method_dir(method, target), "search")

    def search_record(self, method: str, target: str) -> str:
        return posixpath.join(self.search_dir(method, target), "record.json")

    def search_log(self, method: str, target: str) -> str:
        """Per-episode log of a search, written by the methods that learn (gat_ppo); others write none."""
        return posixpath.join(self.search_dir(method, target), "log.csv")

    def mask(self, method: str, target: str) -> str:
        return posixpath.join(self.method_dir(method, target), "mask.pt")

    def finetuned_dir(self, method: str, target: str) -> str:
        return posixpath.join(self.method_dir(method, target), "finetuned")

    def finetuned_model(self, method: str, target: str) -> str:
        return posixpath.join(self.finetuned_dir(method, target), "model.pt")

    def finetuned_metrics(self, method: str, target: str) -> str:
        return posixpath.join(self.finetuned_dir(method, target), "metrics.json")

    def finetuned_history(self, method: str, target: str) -> str:
        return posixpath.join(self.finetuned_dir(method, target), "history.csv")

    # logs and Snakemake benchmark files; per (method, target) when both are given
    def log(self, step: str, method: str | None = None, target: str | None = None) -> str:
        return posixpath.join(self._log_dir(method, target), f"{step}.log")

    def benchmark(self, step: str, method: str | None = None, target: str | None = None) -> str:
        return posixpath.join(self._log_dir(method, target), f"{step}.benchmark.tsv")

    def _log_dir(self, method: str | None, target: str | None) -> str:
        if (method is None) != (target is None):
            raise ValueError("give both method and target, or neither")
        parts = [self.logs_root, self.experiment] + ([method, target] if method is not None else [])
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


def figures_dir(root: str) -> str:
    return posixpath.join(root, "figures")


def report_html(root: str) -> str:
    return posixpath.join(root, "report.html")


# The report's figures by name; each has a caption workflow/report/<name>.rst.
REPORT_FIGURES = ("accuracy_vs_flops", "search_curves", "kept_channels")


def figure(root: str, name: str) -> str:
    return posixpath.join(figures_dir(root), f"{name}.png")


def report_log(logs_root: str = "logs") -> str:
    return posixpath.join(logs_root, "report.log")


def report_benchmark(logs_root: str = "logs") -> str:
    return posixpath.join(logs_root, "report.benchmark.tsv")
