"""Scoring a mask during a search: the sliced forward (pruned network's cost) against the masked one, and
NHWC (channels-last) images against NCHW ones for the sliced forward.

Per network and FLOPs budget, `--masks` random masks that meet the budget (random keep bits, then the
lowest-random-score channels dropped until the budget holds), each scored once by three `SearchEvaluator`s
(BN recalibration on 2 x 128 images, then the search images): masked NCHW, sliced NCHW, sliced NHWC (the
default), interleaved mask by mask so that load changes hit all alike. Printed per (network, budget): median
ms per mask of each and the ratios masked / sliced and NCHW / NHWC, median and min-max over `--repeats`
rounds of fresh masks; and whether the three gave the same accuracy for every mask. Networks: ResNet-20 on
digits-sized inputs (1x8x8, 300 search images: the default experiment's shapes) and ResNet-56 on CIFAR-sized
ones (3x32x32, --cifar-images), freshly initialised on random images and labels (the cost does not depend on
the weights or the data).

    .venv/bin/python bench/search_eval_speed.py [--masks 10] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from common import machine_summary

from graphprune.methods.base import remove_to_budget
from graphprune.models import ModelSpec, build_model
from graphprune.network.cost import CostModel, parse_target
from graphprune.network.pruning import ChannelGroups, Mask
from graphprune.network.search_eval import SearchEvaluator

NETWORKS = (("resnet20", 1, 8, 300), ("resnet56", 3, 32, None))  # name, channels, size, search images
TARGETS = ("flops0.5", "flops0.3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cifar-images", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"Machine: {machine_summary()}\n")
    print("| network | budget | masked ms/mask | sliced ms/mask | sliced NHWC ms/mask | masked / sliced | "
          "NCHW / NHWC | same accuracies |")
    print("|---|---|---|---|---|---|---|---|")
    for name, channels, size, images in NETWORKS:
        evaluators, groups, cost = setup(name, channels, size, images or args.cifar_images)
        for target in TARGETS:
            budget = parse_target(target)
            rounds = [timed_round(evaluators, random_masks(groups, cost, budget, args.masks, seed))
                      for seed in range(args.repeats)]
            masked, sliced, nhwc = ([r[0][k] for r in rounds] for k in range(3))
            slicing = [m / s for m, s in zip(masked, sliced, strict=True)]
            layout = [s / n for s, n in zip(sliced, nhwc, strict=True)]
            same = all(r[1] for r in rounds)
            print(f"| {name} {channels}x{size} | {target} | {spread(masked)} | {spread(sliced)} | {spread(nhwc)} | "
                  f"{spread(slicing, '.2f')} | {spread(layout, '.2f')} | {'yes' if same else 'NO'} |")


def setup(name: str, channels: int, size: int, images: int):
    torch.manual_seed(0)
    spec = ModelSpec(name, in_channels=channels, input_size=size)
    model = build_model(spec).eval()
    groups = ChannelGroups(model, spec.input_shape)
    generator = torch.Generator().manual_seed(1)
    search = torch.randn(images, channels, size, size, generator=generator)
    labels = torch.randint(0, 10, (images,), generator=generator)
    calibration = list(torch.randn(256, channels, size, size, generator=generator).split(128))
    evaluators = [SearchEvaluator(model, groups, search, labels, calibration, sliced=sliced,
                                  channels_last=channels_last)
                  for sliced, channels_last in ((False, False), (True, False), (True, True))]
    assert evaluators[1]._sliced is not None, f"{name} is not sliceable"
    return evaluators, groups, CostModel(model, groups)


def random_masks(groups: ChannelGroups, cost: CostModel, budget, count: int, seed: int) -> list[Mask]:
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(count):
        flags = [rng.random(size) < rng.uniform(0.4, 0.9) for size in groups.sizes]
        for f in flags:
            f[rng.integers(len(f))] = True
        scores = [rng.random(size) for size in groups.sizes]
        masks.append(remove_to_budget(Mask.from_keep_flags(flags), cost, budget, scores))
    return masks


def timed_round(evaluators, masks: list[Mask]) -> tuple[list[float], bool]:
    """(median ms per mask of each evaluator, whether every accuracy agreed)."""
    times: list[list[float]] = [[] for _ in evaluators]
    accuracies: list[list[float]] = [[] for _ in evaluators]
    for i, mask in enumerate(masks):
        # Rotated, so that no evaluator always meets a mask's new layer shapes first (oneDNN caches kernels).
        for k in np.roll(np.arange(len(evaluators)), i):
            evaluator = evaluators[k]
            start = time.perf_counter()
            accuracies[k].append(evaluator(mask))
            times[k].append(1000 * (time.perf_counter() - start))
    return [statistics.median(t) for t in times], all(a == accuracies[0] for a in accuracies)


def spread(values: list[float], fmt: str = ".1f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


if __name__ == "__main__":
    main()
