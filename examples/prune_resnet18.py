"""Prune a torchvision ResNet-18 trained on Fashion-MNIST with the gat_ppo agent, fine-tune it, and measure it.

    .venv/bin/python examples/prune_resnet18.py
    .venv/bin/python examples/prune_resnet18.py --train-images 500 --epochs 1 --evaluations 4   # 5 min*
    .venv/bin/python examples/prune_resnet18.py --target flops0.5 --evaluations 64

Steps: train the network briefly (your own training would go here), hold out part of the training images for
the search, let the agent choose which channels to keep under the budget, remove them physically, fine-tune,
and compare test accuracy and measured latency with the unpruned network. Needs Debian's
`dataset-fashion-mnist` (or set download to true below on a machine with internet access).
* measured on a 2-core CPU shared with other jobs (2026-12-01): 5 min 11 s, of which 226 s in graphprune.prune
(latency table, graph, 4 evaluated masks); speed-up x1.59 at batch 1 for the latency0.6 budget.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Subset

import graphprune
from graphprune.config import dataset_settings
from graphprune.data.splits import load_splits
from graphprune.network.latency import measure_latency


def resnet18_for_fashion_mnist() -> nn.Module:
    """torchvision's ResNet-18 with a one-channel stem and ten classes."""
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def train_briefly(model: nn.Module, images, epochs: int, seed: int) -> None:
    """A plain training loop, standing in for however the user trained their network."""
    torch.manual_seed(seed)
    loader = DataLoader(images, batch_size=128, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()


def test_accuracy(model: nn.Module, images) -> float:
    """Top-1 on held-out test images: only reported, never used by the search."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(images, batch_size=512):
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(images)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="latency0.6", help="budget (default %(default)s)")
    parser.add_argument("--method", default="gat_ppo")
    parser.add_argument("--evaluations", type=int, default=32, help="masks the agent may score")
    parser.add_argument("--train-images", type=int, default=10_000, help="training images used (of 54,000)")
    parser.add_argument("--test-images", type=int, default=2_000, help="test images reported on (of 10,000)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs before pruning")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    splits = load_splits(dataset_settings({"name": "fashion_mnist", "root": "data"}))
    generator = torch.Generator().manual_seed(args.seed)
    train = Subset(splits.train, torch.randperm(len(splits.train), generator=generator)[:args.train_images].tolist())
    test = Subset(splits.test, list(range(args.test_images)))  # only reported, never searched on
    torch.manual_seed(args.seed)
    model = resnet18_for_fashion_mnist()
    started = time.perf_counter()
    train_briefly(model, train, args.epochs, args.seed)
    print(f"trained ResNet-18 on {len(train)} images in {time.perf_counter() - started:.0f} s: "
          f"test top-1 {test_accuracy(model, test):.4f}")

    data = graphprune.PruneData(train=train, search=splits.search)  # the search split is held out of train
    example = torch.zeros(1, 1, 28, 28)
    started = time.perf_counter()
    result = graphprune.prune(model, example, target=args.target, method=args.method, data=data,
                              evaluations=args.evaluations, search_images=512, seed=args.seed,
                              settings={"episodes_per_iteration": 8} if args.method == "gat_ppo" else None)
    search_seconds = time.perf_counter() - started
    graphprune.finetune(result, epochs=args.finetune_epochs, seed=args.seed)  # the pipeline recipe: lr 0.01

    latency = measure_latency(result.model, model.eval(), (1, 28, 28), (1, 64), repeats=20)
    report = {
        "target": args.target, "flops_ratio": result.metrics.flops_ratio, "params_ratio": result.metrics.params_ratio,
        "predicted_latency_ratio": result.metrics.predicted_latency_ratio,
        "search_top1": result.metrics.search_top1, "test_top1_full": test_accuracy(model, test),
        "test_top1_pruned": test_accuracy(result.model, test), "speedup_b1": 1 / latency[1]["ratio"],
        "speedup_b64": 1 / latency[64]["ratio"], "prune_seconds": search_seconds,
    }
    print(f"{args.method} {args.target} in {search_seconds:.0f} s: kept {report['flops_ratio']:.3f} of FLOPs, "
          f"{report['params_ratio']:.3f} of params; test top-1 {report['test_top1_full']:.4f} -> "
          f"{report['test_top1_pruned']:.4f} after {args.finetune_epochs} fine-tuning epoch(s); measured speed-up "
          f"x{report['speedup_b1']:.2f} at batch 1, x{report['speedup_b64']:.2f} at batch 64")
    return report


if __name__ == "__main__":
    main()
