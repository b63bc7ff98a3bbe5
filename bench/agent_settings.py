"""How gat_ppo learns under different settings: one search per (settings row, seed), the learning measured.

For each named row of gat_ppo settings (merged over the experiment's own), target and seed, one search on
the search split (no test data, no fine-tuning), then from its search/iterations.csv and record: the best
mask's search top-1, the greedy policy's at the end, the mean sampled accuracy of the first and last
iteration, the largest drop of the sampled mean below its running maximum after the first quarter
(collapse), the share of episodes repaired in the last quarter, the multiplier at the end and its cap.
Searches are exact for a seed and thread count, so a row reruns to the same numbers.

    python bench/agent_settings.py [--rows default mean no_prior l1_repair] [--targets flops0.3] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import torch
from common import machine_summary

from graphprune.config import load_config
from graphprune.stages.report import learning_measures
from graphprune.stages.search import load_setup, run_search

# name -> settings merged over the experiment's gat_ppo settings (the ablations of docs/AGENT.md)
ROWS = {
    "default": {},
    "mean": {"policy": {"log_prob": "mean"}},  # the per-bit mean log-probability in PPO's ratio
    "no_prior": {"policy": {"prior_strength": 0.0}},
    "l1_repair": {"repair": "l1"},
    "tolerance_0.01": {"lagrange_tolerance": 0.01},
    "ratio": {"policy": {"action": "ratio"}},
    "mlp": {"policy": {"encoder": "mlp"}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--experiment", default="digits-resnet20")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--targets", nargs="+", default=["flops0.3"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = parser.parse_args()
    config = load_config(args.config)
    print(f"machine: {machine_summary()}\n")
    rows = []
    for name in args.rows:
        data = config_with_variant(args.config, args.experiment, name)
        for target in args.targets:
            for seed in args.seeds:
                rows.append({"settings": name, "target": target, "seed": seed,
                             **one_search(config, data, args.experiment, name, target, seed)})
                print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows).drop(columns="seed").groupby(["settings", "target"], sort=False)
    print("\nmean (std) over seeds:")
    print((table.mean().round(3).astype(str) + " (" + table.std().round(3).astype(str) + ")").to_string())


def config_with_variant(config_path: str, experiment: str, name: str):
    """The config with the row's settings as the variant `gat_ppo_<name>` of `experiment`."""
    import yaml

    from graphprune.config import config_from_dict

    raw = yaml.safe_load(Path(config_path).read_text())
    raw["experiments"][experiment].setdefault("variants", {})[f"gat_ppo_{name}"] = {
        "method": "gat_ppo", "settings": ROWS[name]}
    return config_from_dict(raw, source=config_path)


def one_search(base_config, config, experiment: str, name: str, target: str, seed: int) -> dict:
    """Run the search in a scratch results folder (the baseline and graph linked from the real one)."""
    scratch = Path(tempfile.mkdtemp(prefix="agent_settings_"))
    try:
        real, copy = base_config.paths(experiment), type(config.paths(experiment))(str(scratch), experiment)
        Path(copy.baseline_dir()).mkdir(parents=True)
        for source, target_path in ((real.baseline_model(), copy.baseline_model()), (real.graph(), copy.graph())):
            if not Path(source).is_file():
                raise SystemExit(f"{source} is missing: run `graphprune pretrain` and `graphprune graph` first")
            shutil.copy(source, target_path)
        config = dataclasses.replace(config, results_dir=str(scratch))
        method = f"gat_ppo_{name}"
        setup = load_setup(config, config.experiment(experiment))
        record = run_search(config, setup, method, target, seed)
        iterations = pd.read_csv(copy.search_iterations(method, target, seed))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {**learning_measures(iterations, record), "masks": record["masks_evaluated"],
            "seconds": record["search_seconds"]}


if __name__ == "__main__":
    torch.set_num_threads(1)  # searches are exact for a seed and thread count
    main()
