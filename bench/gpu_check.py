"""The GPU check (`make test-gpu`): the CUDA tests, one pretraining with AMP, latency on CUDA, and one gat_ppo
search on CUDA with its time per episode against the CPU. Without CUDA it prints one line and exits 0.

Run on a GPU machine: `.venv/bin/python bench/gpu_check.py` (about 5 minutes); writes bench/out/gpu_check.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import machine_summary

import graphprune
from graphprune.config import config_from_dict, dataset_settings
from graphprune.data.splits import load_splits
from graphprune.models import ModelSpec, build_model
from graphprune.network.latency import measure_latency
from graphprune.network.pruning import ChannelGroups, Mask, prune_model
from graphprune.stages.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
SEARCH_EVALUATIONS = 32


def cuda_tests() -> dict:
    started = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py"], cwd=ROOT)
    return {"exit_code": code, "seconds": time.perf_counter() - started}


def amp_pretraining(folder: Path) -> dict:
    config = config_from_dict({"results_dir": str(folder / "results"), "device": "cuda", "experiments": {
        "gpu-check": {"dataset": {"name": "digits", "search_size": 300}, "model": {"name": "resnet20"},
                      "pretrain": {"epochs": 5, "batch_size": 64, "lr": 0.1, "amp": True}}}})
    started = time.perf_counter()
    metrics = pretrain(config, config.experiment("gpu-check"), device="cuda")
    return {"test_top1": metrics.test_top1, "epochs": metrics.epochs, "seconds": time.perf_counter() - started}


def cuda_latency() -> dict:
    spec = ModelSpec("resnet56")
    model = build_model(spec).cuda()
    groups = ChannelGroups(model, spec.input_shape)
    half = Mask(groups.sizes, tuple(tuple(range(0, size, 2)) for size in groups.sizes))
    latency = measure_latency(prune_model(model, groups, half), model, spec.input_shape, (1, 64), "cuda")
    return {str(batch): value for batch, value in latency.items()}


def search_seconds_per_episode(device: str) -> dict:
    splits = load_splits(dataset_settings({"name": "digits", "search_size": 300}))
    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet20", num_classes=10, in_channels=1, input_size=8))
    result = graphprune.prune(model, torch.zeros(2, 1, 8, 8), target="flops0.5", method="gat_ppo",
                              data=graphprune.PruneData(splits.train, splits.search),
                              evaluations=SEARCH_EVALUATIONS, device=device, latency_batch_sizes=())
    episodes = int(result.record["episodes"])
    return {"episodes": episodes, "search_seconds": result.metrics.search_seconds,
            "seconds_per_episode": result.metrics.search_seconds / max(1, episodes)}


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine: skipped")
        return 0
    report = {"machine": machine_summary(), "gpu": torch.cuda.get_device_name(0)}
    report["cuda_tests"] = cuda_tests()
    with tempfile.TemporaryDirectory() as folder:
        report["amp_pretraining"] = amp_pretraining(Path(folder))
    report["latency_resnet56_half"] = cuda_latency()
    report["gat_ppo_search"] = {device: search_seconds_per_episode(device) for device in ("cuda", "cpu")}
    OUT.mkdir(exist_ok=True)
    (OUT / "gpu_check.json").write_text(json.dumps(report, indent=2))
    search = report["gat_ppo_search"]
    print(json.dumps(report, indent=2))
    print(f"gat_ppo s/episode: cuda {search['cuda']['seconds_per_episode']:.3f}, "
          f"cpu {search['cpu']['seconds_per_episode']:.3f}")
    return report["cuda_tests"]["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
