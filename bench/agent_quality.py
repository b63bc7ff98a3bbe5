"""Does the agent learn? gat_ppo against the ratio-search controls at equal evaluations, l1_uniform, random.

For each target and seed, on the default experiment (digits, ResNet-20, trained by the pipeline's pretrain
step if absent): the search accuracy (BN-recalibrated masked forward, before fine-tuning) and the test
accuracy (same, on the test split) of
- gat_ppo's best mask (default settings, or --reward to compare reward variants),
- random_search's and l1_ratio_search's best of N masks, N = the experiment's search.evaluations (the agent's
  budget too),
- l1_uniform, and the mean of 20 random feasible masks;
plus the mean search accuracy of the masks the agent sampled in its first and last iterations, episodes per
second, the share of the search's wall time spent in evaluation / environment bookkeeping / policy and
updates, and the wall time of one search.

    python bench/agent_quality.py [--targets flops0.5 flops0.3] [--seeds 0 1 2] [--reward self_competition]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from common import machine_summary, trained_setup

from graphprune.methods.base import MethodContext, get_method
from graphprune.network.cost import parse_target

RANDOM_MASKS = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--experiment", default="digits-resnet20")
    parser.add_argument("--targets", nargs="+", default=["flops0.5", "flops0.3"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--reward", default=None, help="override the reward kind (self_competition|ranked|absolute)")
    parser.add_argument("--evaluations", type=int, default=None, help="override the search budget of every method")
    args = parser.parse_args()

    experiment, setup, test_scorer = trained_setup(args.config, args.experiment)
    agent_settings = experiment.method_settings("gat_ppo")
    if args.reward:
        agent_settings["reward"] = {**agent_settings.get("reward", {}), "kind": args.reward}
    print(f"machine: {machine_summary()}")
    print(f"experiment {experiment.name}, agent settings {agent_settings or 'defaults'}\n")

    rows = []
    for target in args.targets:
        budget = parse_target(target)
        for seed in args.seeds:
            rows.append(run_one(setup, test_scorer, budget, seed, agent_settings,
                                args.evaluations or experiment.search.evaluations))
            print(pd.DataFrame(rows[-1:]).round(4).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    print("\nper run:")
    print(table.round(4).to_string(index=False))
    print("\nmean (std) over seeds:")
    numeric = table.drop(columns=["seed"]).groupby("target")
    summary = numeric.mean().round(4).astype(str) + " (" + numeric.std().round(4).astype(str) + ")"
    print(summary.T.to_string())


def run_one(setup, test_scorer, budget, seed, agent_settings, evaluations) -> dict:
    evaluator = setup.evaluator
    out_dir = Path(tempfile.mkdtemp(prefix="agent_quality_"))
    try:
        context = MethodContext(setup.model, setup.groups, setup.cost, setup.graph, evaluator, seed, out_dir,
                                evaluations)
        start = time.perf_counter()
        agent = get_method("gat_ppo").search(context, budget, agent_settings)
        agent_seconds = time.perf_counter() - start
        log = pd.read_csv(out_dir / "log.csv")
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    by_iteration = log.groupby("iteration")["search_top1"].mean()
    context = MethodContext(setup.model, setup.groups, setup.cost, None, evaluator, seed, None, evaluations)
    control = get_method("random_search").search(context, budget)
    l1_control = get_method("l1_ratio_search").search(context, budget)
    l1 = get_method("l1_uniform").search(context, budget)
    randoms = [get_method("random").search(MethodContext(setup.model, setup.groups, setup.cost, seed=seed * 1000 + i),
                                           budget).mask for i in range(RANDOM_MASKS)]
    shares = agent.record["time_share"]
    return {
        "target": str(budget), "seed": seed,
        "agent_search": evaluator(agent.mask), "agent_test": test_scorer(agent.mask),
        "random_search_search": evaluator(control.mask), "random_search_test": test_scorer(control.mask),
        "l1_ratio_search_search": evaluator(l1_control.mask), "l1_ratio_search_test": test_scorer(l1_control.mask),
        "l1_uniform_search": evaluator(l1.mask), "l1_uniform_test": test_scorer(l1.mask),
        "random_mean_search": statistics.mean(evaluator(m) for m in randoms),
        "random_mean_test": statistics.mean(test_scorer(m) for m in randoms),
        "agent_first_iteration": by_iteration.iloc[0], "agent_last_iteration": by_iteration.iloc[-1],
        "masks_evaluated": agent.record["masks_evaluated"], "agent_seconds": agent_seconds,
        "episodes_per_second": agent.record["episodes_per_second"],
        "share_evaluation": shares["evaluation"], "share_bookkeeping": shares["environment_bookkeeping"],
        "share_policy_updates": shares["policy_and_updates"],
    }


if __name__ == "__main__":
    torch.set_num_threads(1)  # reproducible timings on a shared 2-core machine
    main()
