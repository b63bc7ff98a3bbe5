"""Is the agent's search bound by its evaluations? gat_ppo against l1_ratio_search, same evaluations, one process.

Issue 24's bound: a gat_ppo search takes at most 2x an l1_ratio_search that scores as many masks, i.e. the
agent's own work (policy, PPO updates, bookkeeping) costs at most what its evaluations cost. Both searches run
on the same trained network (a config's experiment; its baseline is pretrained if absent), the same search
images and budget, alternating which goes first, `--repeats` times, in this one process with `--threads` torch
threads. Prints each pair's seconds, the ratio gat_ppo / l1_ratio_search per pair (median, min-max), and the
split of the agent's time (collecting with its evaluations, PPO updates) from its search record.

    .venv/bin/python bench/search_time.py                          # make run's digits network, flops0.3, 3 pairs
    .venv/bin/python bench/search_time.py --config configs/fashion-resnet20.yaml --experiment fashion-resnet20
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and "numba" not in sys.modules:
    os.environ.setdefault("NUMBA_DISABLE_JIT", "1")  # as the graphprune commands do: no 9 s compile per process

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from common import machine_summary, trained_setup  # noqa: E402

from graphprune.search_setup import parse_request  # noqa: E402

METHODS = ("gat_ppo", "l1_ratio_search")


def one_search(setup, experiment, method: str, target: str, seed: int, out_dir: Path) -> dict:
    """The search record of `method` (the experiment's settings for it) on `setup`, written under `out_dir`."""
    request = parse_request(method, target, experiment.method_settings(method))
    context = setup.context(request, seed=seed, out_dir=out_dir, evaluations=experiment.evaluations(method))
    return request.method.search(context, request.budget, request.settings).record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--experiment", default="digits-resnet20")
    parser.add_argument("--target", default="flops0.3")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of searches (seeds 0, 1, ...)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    experiment, setup, _ = trained_setup(args.config, args.experiment)
    print(f"machine: {machine_summary()}")
    print(f"{args.experiment} {args.target}, {experiment.evaluations('gat_ppo')} evaluations per search, "
          f"{args.threads} thread(s), {args.repeats} pairs\n")
    print("| pair | gat_ppo s | l1_ratio_search s | ratio | gat_ppo collect s (evaluation s) | gat_ppo update s |")
    print("|---|---|---|---|---|---|")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="search_time_") as scratch:
        for pair in range(args.repeats):
            seconds, timing = {}, {}
            for method in (METHODS if pair % 2 == 0 else METHODS[::-1]):
                out_dir = Path(scratch) / f"{method}-{pair}"
                out_dir.mkdir()
                record = one_search(setup, experiment, method, args.target, pair, out_dir)
                seconds[method] = float(record["search_seconds"])
                timing[method] = record.get("timing_seconds", {})
            ratio = seconds["gat_ppo"] / seconds["l1_ratio_search"]
            ratios.append(ratio)
            t = timing["gat_ppo"]
            print(f"| {pair} | {seconds['gat_ppo']:.1f} | {seconds['l1_ratio_search']:.1f} | {ratio:.2f} | "
                  f"{t.get('collect', float('nan')):.1f} ({t.get('evaluation', float('nan')):.1f}) | "
                  f"{t.get('update', float('nan')):.1f} |", flush=True)
    print(f"\ngat_ppo / l1_ratio_search: median {statistics.median(ratios):.2f} "
          f"({min(ratios):.2f}-{max(ratios):.2f}); issue 24's bound: at most 2.00")


if __name__ == "__main__":
    main()
