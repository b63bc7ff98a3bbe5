"""The final policy of finished gat_ppo searches, decoded two ways: is the greedy gap a matter of decoding?

The greedy policy keeps a channel where its keep probability is above 0.5 (the mode of every bit), then
repair drops channels until the budget holds. Where many probabilities sit near the budget's keep fraction,
thresholding keeps all or none of a group. The "expected count" decode keeps, at each step, the round(sum of
p) channels the policy rates highest: the step's expected width, filled with its most likely channels.

Per finished search of the config's gat_ppo methods (variants too) the agent is restored from
`search/agent.pt` (its evaluations are spent, so nothing is searched), one episode is run with each decode,
and the mask, repaired by the final policy's keep probabilities, is scored on the search split (the search
record's `greedy_policy_search_top1` may differ slightly: its repair ranked by the policy before its last
update).
Prints one row per search and the mean gap to the best mask per (method, target); runs no search.

    .venv/bin/python bench/greedy_decode.py --config configs/agent-bar.yaml --experiment digits-bar \
        [--methods gat_ppo gat_ppo_budget_margin]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import torch

from graphprune.config import load_config
from graphprune.methods.base import BudgetedEvaluator, MethodContext
from graphprune.methods.gat_ppo import policy, repair_scores
from graphprune.methods.gat_ppo.agent import GatPpoSearch
from graphprune.methods.settings import AgentSettings, parse_settings
from graphprune.network.cost import parse_target
from graphprune.network.graph import topological_group_order
from graphprune.stages.search import load_setup


def expected_count_mode(self) -> torch.Tensor:
    """Per row of [B, W] logits: the round(sum of keep probabilities) highest-probability real bits kept."""
    logits = self.base_dist.logits
    real = logits > policy.PADDED_LOGIT / 2
    count = (torch.sigmoid(logits) * real).sum(-1).round().long()  # [B]
    rank = torch.argsort(torch.argsort(logits, dim=-1, descending=True, stable=True), dim=-1)
    return (rank < count[:, None]).float()


@contextlib.contextmanager
def decoded_by(mode) -> Iterator[None]:
    """The policy's deterministic action (`mode` of its keep bits) replaced for the duration."""
    original = policy.IndependentBernoulli.mode
    policy.IndependentBernoulli.mode = property(mode)
    try:
        yield
    finally:
        policy.IndependentBernoulli.mode = original


DECODES = {"threshold": policy.IndependentBernoulli.mode.fget, "expected_count": expected_count_mode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/agent-bar.yaml")
    parser.add_argument("--experiment", default="digits-bar")
    parser.add_argument("--methods", nargs="+", help="gat_ppo methods or variants (default: all of them)")
    parser.add_argument("--out", default="bench/out/greedy_decode.csv")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the pipeline's searches, whose checkpoints record 1 thread
    config = load_config(args.config)
    experiment = config.experiment(args.experiment)  # an unknown name: a message listing the known ones
    methods = args.methods or [m for m in experiment.methods if experiment.base_method(m) == "gat_ppo"]
    setup = load_setup(config, experiment, "cpu")
    order = topological_group_order(setup.graph.group_roots, setup.graph.layer_names)
    rows = []
    for method in methods:
        settings = parse_settings(AgentSettings, experiment.method_settings(method), method)
        for target in experiment.targets:
            for seed in experiment.seeds:
                search_dir = Path(config.paths(experiment.name).search_dir(method, target, seed))
                if not (search_dir / "agent.pt").is_file():
                    continue
                record = json.loads((search_dir / "record.json").read_text())
                row = {"method": method, "target": target, "seed": seed, "best": record["search_top1"]}
                row.update(decode_final_policy(setup, order, settings, target, seed, search_dir))
                rows.append(row)
                print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
    table = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    for decode in DECODES:
        table[f"{decode}_gap"] = table["best"] - table[decode]
    summary = table.groupby(["method", "target"])[[f"{d}_gap" for d in DECODES]].agg(["mean", "min", "max"])
    print("\nGap to the best mask (points of search top-1), mean (min, max) over seeds:\n")
    print(summary.mul(100).round(1).to_string())


def decode_final_policy(setup, order, settings, target, seed, search_dir) -> dict[str, float]:
    """{decode: search top-1 of its repaired mask} for the agent saved in `search_dir`."""
    experiment = setup.experiment
    context = MethodContext(setup.model, setup.groups, setup.cost, setup.graph, setup.evaluator, seed=seed)
    evaluator = BudgetedEvaluator(setup.evaluator, experiment.search.evaluations, on_new_mask=_no_search)
    with tempfile.TemporaryDirectory() as copy:  # the search's own folder is never written
        shutil.copy(search_dir / "agent.pt", copy)
        search = GatPpoSearch(setup.graph, order, setup.cost, parse_target(target), evaluator,
                              repair_scores(context), settings, seed=seed, out_dir=copy,
                              min_channels=setup.groups.min_channels)
        try:
            search.run()  # restores the finished search: its evaluations are spent, so it stops at once
            # Repair then drops the channels the final policy rates lowest, as in the search's last episodes
            # (restored, it would rank by L1 until it looks at its policy).
            search._look_at_the_policy()
            scores = {}
            for name, mode in DECODES.items():
                with decoded_by(mode):
                    scores[name] = search.greedy_mask()[1]
            return scores
        finally:
            search.close()


def _no_search() -> None:
    raise SystemExit("agent.pt did not resume (other settings or threads: see the warning above); "
                     "this script decodes finished searches only")


if __name__ == "__main__":
    main()
