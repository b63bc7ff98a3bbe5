"""Size and build time of the network graph (graph.py) for a small, a large and a depthwise network.

CIFAR ResNet-56 (32x32), torchvision ResNet-50 (224x224, 1000 classes) and CIFAR MobileNetV2 (32x32), all
freshly initialised (sizes do not depend on the weights; times barely do): nodes by type, edges by type and
the seconds of each step (channel groups, cost model, graph). Run: `.venv/bin/python bench/graph_size.py`.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine_summary

from graphprune.models import ModelSpec, build_model
from graphprune.network.cost import CostModel
from graphprune.network.graph import EDGE_TYPES, build_graph
from graphprune.network.pruning import ChannelGroups

CASES = [
    ModelSpec("resnet56", input_size=32),
    ModelSpec("torchvision:resnet50", num_classes=1000, input_size=224),
    ModelSpec("mobilenetv2", input_size=32),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-k", type=int, default=8, help="channel_flow edges per target channel")
    parser.add_argument("--calibration-batch", type=int, default=32, help="images for activation statistics")
    args = parser.parse_args()

    print(f"machine: {machine_summary()}")
    print(f"top_k {args.top_k}, calibration batch {args.calibration_batch} random images\n")
    size_header = ("model", "input", "groups", "channel nodes", "layer nodes", "edges", *EDGE_TYPES[::2])
    time_header = ("model", "groups s", "cost model s", "graph s", "graph MiB")
    sizes, times = [], []
    for spec in CASES:
        torch.manual_seed(0)
        model = build_model(spec).eval()
        start = time.perf_counter()
        groups = ChannelGroups(model, spec.input_shape)
        groups_s = time.perf_counter() - start
        start = time.perf_counter()
        cost = CostModel(model, groups)
        cost_s = time.perf_counter() - start
        calibration = torch.randn(args.calibration_batch, *spec.input_shape)
        graph = build_graph(model, groups, cost, calibration, top_k=args.top_k)
        summary = graph.summary()
        tensors = graph.to_dict()
        mebibytes = sum(v.numel() * v.element_size() for v in tensors.values() if torch.is_tensor(v)) / 2**20
        # Each edge type is listed once: its reverse has the same count.
        sizes.append((spec.name, f"{spec.input_size}x{spec.input_size}", summary["groups"],
                      summary["nodes"]["channel"], summary["nodes"]["layer"], summary["edges_total"],
                      *(summary["edges"][name] for name in EDGE_TYPES[::2])))
        times.append((spec.name, f"{groups_s:.2f}", f"{cost_s:.2f}", f"{graph.build_seconds:.2f}", f"{mebibytes:.1f}"))
    for header, rows in ((size_header, sizes), (time_header, times)):
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(f"{x:,}" if isinstance(x, int) else str(x) for x in row) + " |")
        print()
    print("edges: all types; each type column counts one direction (its reverse type has as many). "
          "'graph s' includes its own trace and one forward pass of the calibration batch.")


if __name__ == "__main__":
    main()
