"""One PPO gradient step of the agent's default encoder (`gat`) as it was and as it is, side by side.

- `before`: GATv2 makes its self-loops in every call, and the actor and the critic each run the static
  attention pass and the state diffusion of the minibatch (the encoder before 2026-12-02);
- `now`: the self-loops are made once, and one static pass and one diffusion serve both readers, whose
  gradients meet at the pass's output and go back through it once (until 2026-12-06 each reader's gradient
  went back through a backward pass of its own, to keep the gradients bit-identical to `before`).

Per network, the same weights and the same random minibatches of 64 states (the default minibatch) for both,
in alternating order; a step is actor and critic forward, the summed losses' backward (as Tianshou's PPO
does), no optimizer step, so every step sees the same weights. Checks that both give the same gradients up to
float rounding (the sums run in another order), then prints ms per step, median (min-max) over `--steps`
steps, the ratio before / now, and the largest gradient difference relative to the gradient's scale.

    cd bench && ../.venv/bin/python update_step.py [--steps 30] [--networks resnet20 resnet56] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import contextmanager

import numpy as np
import torch
from common import machine_summary
from encoder_cost import TARGET, Network, random_states, setup
from tianshou.data import Batch

from graphprune.methods.base import BudgetedEvaluator
from graphprune.methods.gat_ppo.agent import AgentSettings, GatPpoSearch
from graphprune.models import ModelSpec
from graphprune.network.cost import parse_target
from graphprune.network.graph import topological_group_order
from graphprune.network.search_eval import SearchEvaluator

MINIBATCH = 64
ROUNDING = 1e-4  # float32 sums in another order: far below this; a missing or extra gradient term: far above


@contextmanager
def as_before(encoder):
    """The encoder as it was: GATv2 adds self-loops to the raw edges in every call, and each reader of a
    minibatch gets passes of its own (forget_static before the critic reads)."""
    looped = encoder.looped_edge_index, encoder.looped_edge_attr
    encoder.looped_edge_index, encoder.looped_edge_attr = encoder.edge_index, encoder.edge_attr
    for conv in encoder.layers:
        conv.add_self_loops = True
    try:
        yield
    finally:
        encoder.looped_edge_index, encoder.looped_edge_attr = looped
        for conv in encoder.layers:
            conv.add_self_loops = False


def gradient_step(search: GatPpoSearch, batch: Batch, before: bool) -> tuple[float, list[torch.Tensor]]:
    """(seconds, gradients) of one step: actor and critic on `batch`, backward of the summed losses."""
    policy, critic, encoder = search.algorithm.policy, search.algorithm.critic, search.encoder
    parameters = list({id(p): p for p in [*policy.parameters(), *critic.parameters()]}.values())
    for p in parameters:
        p.grad = None
    start = time.perf_counter()
    logits = policy(batch).logits
    if before:
        encoder.forget_static()
    loss = logits.mean() + critic(batch.obs).mean()
    loss.backward()
    seconds = time.perf_counter() - start
    encoder.forget_static()
    return seconds, [p.grad.clone() if p.grad is not None else None for p in parameters]


def measure(network: Network, steps: int) -> tuple[list[float], list[float], float]:
    model, groups, cost, graph, images, labels, calibration, scores = setup(network)
    evaluator = SearchEvaluator(model, groups, images, labels, calibration, recalibrate_bn=True)
    order = topological_group_order(graph.group_roots, graph.layer_names)
    times, differences = {True: [], False: []}, []
    with tempfile.TemporaryDirectory(prefix="update_step_") as out_dir:
        search = GatPpoSearch(graph, order, cost, parse_target(TARGET), BudgetedEvaluator(evaluator, 1), scores,
                              AgentSettings(), seed=0, out_dir=out_dir)
        try:
            with torch.no_grad():  # zero at the start, where no gradient would reach the encoder through the actor
                for head in (search.algorithm.policy.actor.head, search.algorithm.policy.actor.group_head):
                    head[-1].weight.normal_()
            rng = np.random.default_rng(0)
            for step in range(steps + 1):  # the first step of each warms up and is not counted
                batch = random_states(search, MINIBATCH, rng)
                grads = {}
                for before in ((True, False) if step % 2 else (False, True)):
                    with as_before(search.encoder) if before else _nothing():
                        seconds, grads[before] = gradient_step(search, batch, before)
                    if step:
                        times[before].append(seconds)
                differences += [_difference(a, b) for a, b in zip(grads[True], grads[False], strict=True)]
        finally:
            search.close()
    if max(differences) > ROUNDING:
        raise AssertionError(f"{network.name}: the gradients differ between before and now by {max(differences):.1e} "
                             "of their scale, more than float rounding")
    return times[True], times[False], max(differences)


@contextmanager
def _nothing():
    yield


def _difference(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    """Largest |a - b| relative to the largest |a| (0 where both are None)."""
    if a is None or b is None:
        if a is None and b is None:
            return 0.0
        raise AssertionError("a parameter has a gradient in one encoder only")
    return float((a - b).abs().max() / a.abs().max().clamp(min=1e-30))


def spread(seconds: list[float]) -> str:
    ms = [1000 * s for s in seconds]
    return f"{statistics.median(ms):.1f} ({min(ms):.1f}-{max(ms):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["resnet20", "resnet56"], choices=["resnet20", "resnet56"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    networks = {"resnet20": Network("digits ResNet-20", ModelSpec("resnet20", in_channels=1, input_size=8), 300),
                "resnet56": Network("CIFAR ResNet-56", ModelSpec("resnet56"), 64)}
    print(f"machine: {machine_summary()}")
    print(f"one gradient step on {MINIBATCH} random states, default agent settings, {args.steps} steps, "
          f"{args.threads} thread(s); gradients equal up to float rounding (checked every step)\n")
    print("| network | before ms | now ms | before / now | largest gradient difference |")
    print("|---|---|---|---|---|")
    for key in args.networks:
        network = networks[key]
        before, now, difference = measure(network, args.steps)
        ratios = [b / n for b, n in zip(before, now, strict=True)]
        print(f"| {network.name} | {spread(before)} | {spread(now)} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}) | {difference:.1e} |", flush=True)


if __name__ == "__main__":
    main()
