"""Does `graphprune.prune` return what it reports? The user's check of issue 25, redone as one command.

    .venv/bin/python bench/api_returns.py [--evaluations 128] [--cli-evaluations 32]

A user-defined CNN (five convs, a residual add and a concatenation branch: the API tests' BranchyNet) is trained
on digits upsampled to 16x16 and pruned to flops0.4 with four methods. Per method it prints the search top-1 the
metrics report, the search top-1 of the returned network (must agree within one image), what the returned network
would score with the unpruned network's BN statistics (what `prune` returned before the fix), and the test top-1
before and after `graphprune.finetune` with its defaults (the pipeline's recipe) and with lr 0.1 for 1 epoch
(the old default). Then `graphprune prune` on torchvision's ResNet-18 (64x64 RGB image folder of two digit
classes) with the seconds of each phase from metrics.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

import graphprune
from graphprune.config import dataset_settings, train_recipe
from graphprune.data.splits import load_splits, make_loader
from graphprune.network.evaluate import evaluate
from graphprune.network.pruning import prune_model
from graphprune.train import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_api_returns import BranchyNet  # noqa: E402 (the network of the API tests)

METHODS = ("l1_uniform", "depgraph", "l1_ratio_search", "gat_ppo")


class Upsampled(Dataset):
    """A dataset's images resized to `size` x `size` (bilinear), as a user's own preprocessing would."""

    def __init__(self, dataset: Dataset, size: int):
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        image, label = self.dataset[index]
        return F.interpolate(image[None], size=self.size, mode="bilinear", align_corners=False)[0], label


def test_top1(model, dataset) -> float:
    return evaluate(model, make_loader(dataset, 256), "cpu")["top1"]


def api_table(evaluations: int) -> None:
    splits = load_splits(dataset_settings({"name": "digits"}))
    train_set, search_set, test_set = (Upsampled(s, 16) for s in (splits.train, splits.search, splits.test))
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as run_dir:
        model = train(BranchyNet(), train_recipe({"epochs": 10, "batch_size": 64, "lr": 0.1}), train_set, search_set,
                      run_dir=run_dir, seed=0, config_hash="bench", device=torch.device("cpu")).model.eval()
    print(f"BranchyNet on digits 16x16: test top-1 {test_top1(model, test_set):.3f}")
    data = graphprune.PruneData(train_set, search_set)
    print("| method | metrics.search_top1 | returned model on search images | with unpruned BN stats (old) "
          "| test pruned | test after finetune() defaults | test after lr 0.1, 1 epoch (old default) "
          "| caller's model unchanged | phases (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method in METHODS:
        model.train()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        settings = {"episodes_per_iteration": 8} if method == "gat_ppo" else None
        result = graphprune.prune(model, torch.zeros(2, 1, 16, 16), target="flops0.4", method=method, data=data,
                                  evaluations=evaluations, settings=settings, latency_batch_sizes=(1,))
        unchanged = model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        old = prune_model(model.eval(), result.groups, result.mask).eval()  # baseline BN statistics kept
        returned_search = test_top1(result.model, search_set)
        test_pruned = test_top1(result.model, test_set)
        old_recipe = graphprune.finetune(copy.deepcopy(result), epochs=1, lr=0.1)
        graphprune.finetune(result)
        phases = ", ".join(f"{k} {v:.1f}" for k, v in result.metrics.phase_seconds.items())
        print(f"| {method} | {result.metrics.search_top1:.3f} | {returned_search:.3f} | {test_top1(old, search_set):.3f} "
              f"| {test_pruned:.3f} | {test_top1(result.model, test_set):.3f} "
              f"| {test_top1(old_recipe.model, test_set):.3f} | {unchanged} | {phases} |")


def cli_phases(evaluations: int) -> None:
    from PIL import Image

    splits = load_splits(dataset_settings({"name": "digits"}))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "images"
        counts = {0: 0, 1: 0}
        for image, label in splits.train:
            if int(label) in counts and counts[int(label)] < 100:
                big = F.interpolate(image[None], size=64, mode="bilinear", align_corners=False)[0, 0]
                pixels = ((big - big.min()) / (big.max() - big.min() + 1e-6) * 255).to(torch.uint8)
                (root / f"digit{int(label)}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels.numpy()).convert("RGB").save(root / f"digit{int(label)}" / f"{counts[int(label)]}.png")
                counts[int(label)] += 1
        out = Path(folder) / "pruned"
        command = [sys.executable, "-m", "graphprune.cli", "prune", "--model", "torchvision:resnet18",
                   "--input-size", "64", "--num-classes", "2", "--data", f"imagefolder:{root}", "--method", "gat_ppo",
                   "--target", "flops0.5", "--finetune-epochs", "3", "--evaluations", str(evaluations),
                   "--out", str(out)]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - start
        metrics = json.loads((out / "metrics.json").read_text())
        print(f"CLI ResNet-18 gat_ppo flops0.5, {evaluations} evaluations: wall {wall:.1f} s; phases (s): "
              + ", ".join(f"{k} {v:.1f}" for k, v in metrics["phase_seconds"].items())
              + f"; latency ratio b1 {metrics['latency']['1']['ratio']:.2f}, b64 {metrics['latency']['64']['ratio']:.2f} "
              f"({metrics['latency_threads']} thread); files: {sorted(p.name for p in out.iterdir())}, "
              f"finetune/: {sorted(p.name for p in (out / 'finetune').iterdir())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evaluations", type=int, default=128)
    parser.add_argument("--cli-evaluations", type=int, default=32)
    args = parser.parse_args()
    api_table(args.evaluations)
    cli_phases(args.cli_evaluations)


if __name__ == "__main__":
    main()
