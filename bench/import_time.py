"""How long each pipeline stage's module takes to import in a fresh interpreter (every job is a process of
its own), beside torch alone and the heavy libraries a stage may avoid, and torch with its first optimizer
(torch's optimizers import `torch._dynamo` when the first one is built: every training or RL job pays it).
Median and range of --repeats runs, interleaved; the ratio column is each row's time over torch's.

    .venv/bin/python bench/import_time.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from common import machine_summary

MODULES = ("torch", "torchvision", "torch_geometric", "tianshou", "sklearn.datasets", "graphprune.stages.pretrain",
           "graphprune.stages.finetune", "graphprune.stages.search", "graphprune.methods.heuristics",
           "graphprune.methods.amc", "graphprune.methods.gat_ppo")
# row -> code run in a fresh interpreter
SNIPPETS = {**{module: f"import {module}" for module in MODULES},
            "torch + first optimizer": "import torch; torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)"}


def run_seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine_summary()}")
    times: dict[str, list[float]] = {row: [] for row in SNIPPETS}
    for _ in range(args.repeats):
        for row, code in SNIPPETS.items():
            times[row].append(run_seconds(code))
    torch_median = statistics.median(times["torch"])
    print("| module | median s | min-max s | / torch |\n|---|---|---|---|")
    for row, seconds in times.items():
        print(f"| {row} | {statistics.median(seconds):.2f} | {min(seconds):.2f}-{max(seconds):.2f} | "
              f"{statistics.median(seconds) / torch_median:.2f} |")


if __name__ == "__main__":
    main()
