"""What each encoder of the agent costs (gat, mlp, gat_state, mean_state): acting, PPO updates, evaluation.

On digits ResNet-20 (1x8x8 inputs, 300 search images: the default experiment's shapes) and CIFAR ResNet-56
(3x32x32, --cifar-images search images), both freshly initialised and scored on random images and labels
(the costs do not depend on the weights or the data), with the agent's default settings (32 episodes and
one PPO update per iteration, minibatches of 64 states, 8 epochs) and BN recalibration on 2 x 128 images.

Per network and encoder, `--repeats` fresh searches of `--iterations` iterations each; printed as median
(min-max) over the repeats:
- acting s/episode: the iteration's wall time less the PPO update and the evaluations, per episode (policy
  forwards, environment bookkeeping, the greedy diagnostic episode);
- update s: one PPO update (returns and advantages, old log-probabilities, the epochs);
- the shares of the iteration's wall time in policy forwards while acting, the PPO update, mask evaluation
  and the rest;
- train step ms / act ms: one gradient step on 64 random states (actor and critic forward, backward) and
  one no-grad actor forward on 8 states (the collector's batch), median of --steps.
Also printed: the share of nodes and edges in the 2-hop in-neighbourhood of a step's channels (what
attention restricted to the step's neighbourhood would still touch).

    .venv/bin/python bench/encoder_cost.py [--repeats 3] [--iterations 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch
from common import machine_summary
from tianshou.data import Batch
from torch_geometric.utils import k_hop_subgraph

from graphprune.methods.base import BudgetedEvaluator, MethodContext
from graphprune.methods.gat_ppo import repair_scores
from graphprune.methods.gat_ppo.agent import AgentSettings, GatPpoSearch
from graphprune.methods.gat_ppo.env import BUDGET_FEATURES
from graphprune.methods.settings import ENCODERS
from graphprune.models import ModelSpec, build_model
from graphprune.network.cost import CostModel, parse_target
from graphprune.network.graph import build_graph, topological_group_order
from graphprune.network.pruning import ChannelGroups
from graphprune.network.search_eval import SearchEvaluator

TARGET = "flops0.5"


@dataclass
class Network:
    name: str
    spec: ModelSpec
    images: int


class TimedEvaluator:
    """A SearchEvaluator that adds up the seconds it spends."""

    def __init__(self, evaluate: SearchEvaluator):
        self.evaluate, self.seconds = evaluate, 0.0

    def __call__(self, mask) -> float:
        start = time.perf_counter()
        try:
            return self.evaluate(mask)
        finally:
            self.seconds += time.perf_counter() - start


def setup(network: Network):
    torch.manual_seed(0)
    model = build_model(network.spec).eval()
    groups = ChannelGroups(model, network.spec.input_shape)
    cost = CostModel(model, groups)
    graph = build_graph(model, groups, cost, torch.randn(32, *network.spec.input_shape))
    images = torch.randn(network.images, *network.spec.input_shape)
    labels = torch.randint(0, network.spec.num_classes, (network.images,))
    calibration = list(torch.randn(256, *network.spec.input_shape).split(128))
    scores = repair_scores(MethodContext(model, groups, cost))
    return model, groups, cost, graph, images, labels, calibration, scores


def one_search(network_setup, encoder: str, seed: int, iterations: int, steps: int) -> dict:
    model, groups, cost, graph, images, labels, calibration, scores = network_setup
    evaluator = TimedEvaluator(SearchEvaluator(model, groups, images, labels, calibration, recalibrate_bn=True))
    settings = AgentSettings(policy={"encoder": encoder})
    order = topological_group_order(graph.group_roots, graph.layer_names)
    with tempfile.TemporaryDirectory(prefix="encoder_cost_") as out_dir:
        search = GatPpoSearch(graph, order, cost, parse_target(TARGET), BudgetedEvaluator(evaluator, 100_000),
                              scores, settings, seed=seed, out_dir=out_dir)
        try:
            policy_seconds, update_seconds = _instrument(search)
            start = time.perf_counter()
            for _ in range(iterations):
                search.iterate(settings.episodes_per_iteration)
            wall = time.perf_counter() - start
            update, evaluation, policy = update_seconds[0], evaluator.seconds, policy_seconds[0]
            train_ms, act_ms = _step_costs(search, steps)
        finally:
            search.close()
    episodes = settings.episodes_per_iteration * iterations
    return {
        "acting s/episode": (wall - update - evaluation) / episodes, "update s": update / iterations,
        "policy %": 100 * policy / wall, "update %": 100 * update / wall, "evaluation %": 100 * evaluation / wall,
        "other %": 100 * (wall - policy - update - evaluation) / wall, "train step ms": train_ms, "act ms": act_ms,
    }


def _instrument(search: GatPpoSearch) -> tuple[list[float], list[float]]:
    """Count the actor's forward time outside PPO updates, and the updates' time: two one-element lists."""
    policy, update, in_update, started = [0.0], [0.0], [False], [0.0]
    actor = search.algorithm.policy.actor

    def before(*_):
        started[0] = time.perf_counter()

    def after(*_):
        if not in_update[0]:
            policy[0] += time.perf_counter() - started[0]

    actor.register_forward_pre_hook(before)
    actor.register_forward_hook(after)
    original = search.algorithm.update

    def timed_update(*args, **kwargs):
        in_update[0] = True
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            update[0] += time.perf_counter() - start
            in_update[0] = False

    search.algorithm.update = timed_update
    return policy, update


def random_states(search: GatPpoSearch, count: int, rng: np.random.Generator) -> Batch:
    """`count` random observations of `search`'s environment (kept and decided bits, budget features, step, the
    budget prior's keep fraction), as a policy input batch."""
    channels, steps = search.layout.num_channels, len(search.layout.steps)
    obs = Batch(kept=rng.integers(0, 2, (count, channels)).astype(np.float32),
                decided=rng.integers(0, 2, (count, channels)).astype(np.float32),
                budget=rng.random((count, len(BUDGET_FEATURES))).astype(np.float32),
                step=rng.integers(0, steps, (count, 1)), keep_to_budget=rng.random((count, 1)))
    return Batch(obs=obs, info={})


def _step_costs(search: GatPpoSearch, steps: int) -> tuple[float, float]:
    """(ms of one gradient step on 64 random states, ms of one no-grad actor forward on 8): medians."""
    policy, critic = search.algorithm.policy, search.algorithm.critic
    shared = {id(p): p for p in [*policy.parameters(), *critic.parameters()]}  # the encoder is in both
    optimizer = torch.optim.Adam(list(shared.values()), lr=1e-5)
    rng = np.random.default_rng(0)
    train, act = [], []
    for _ in range(steps):
        batch = random_states(search, 64, rng)
        start = time.perf_counter()
        out = policy(batch)
        loss = out.logits.mean() + critic(batch.obs).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        train.append(time.perf_counter() - start)
        batch = random_states(search, 8, rng)
        start = time.perf_counter()
        with torch.no_grad():
            policy(batch)
        act.append(time.perf_counter() - start)
        search.encoder.forget_static()
    return 1000 * statistics.median(train), 1000 * statistics.median(act)


def neighbourhood_shares(graph, hops: int = 2) -> tuple[float, float]:
    """Mean share of nodes and of edges within `hops` in-hops of one group's channels."""
    nodes, edges = [], []
    for channels in graph.channel_nodes:
        subset, edge_index, _, _ = k_hop_subgraph(channels, hops, graph.data.edge_index, num_nodes=graph.num_nodes)
        nodes.append(len(subset) / graph.num_nodes)
        edges.append(edge_index.shape[1] / graph.data.edge_index.shape[1])
    return float(np.mean(nodes)), float(np.mean(edges))


def summary(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["resnet20", "resnet56"], choices=["resnet20", "resnet56"])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=1, help="iterations (one PPO update each) per search")
    parser.add_argument("--steps", type=int, default=5, help="repeats of the train-step / act micro-timing")
    parser.add_argument("--cifar-images", type=int, default=256, help="search images of the ResNet-56 case")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    networks = {"resnet20": Network("digits ResNet-20", ModelSpec("resnet20", in_channels=1, input_size=8), 300),
                "resnet56": Network("CIFAR ResNet-56", ModelSpec("resnet56"), args.cifar_images)}
    print(f"machine: {machine_summary()}")
    print(f"target {TARGET}, default agent settings, {args.repeats} repeats of {args.iterations} iteration(s)\n")
    columns = ("acting s/episode", "update s", "policy %", "update %", "evaluation %", "other %", "train step ms",
               "act ms")
    digits = {"acting s/episode": 3, "update s": 1, "train step ms": 0, "act ms": 0}
    rows = []
    for key in args.networks:
        network = networks[key]
        network_setup = setup(network)
        graph = network_setup[3]
        node_share, edge_share = neighbourhood_shares(graph)
        print(f"{network.name}: {graph.num_nodes} nodes, {graph.data.edge_index.shape[1]} edges, "
              f"{len(graph.group_sizes)} steps per episode; the 2-hop in-neighbourhood of a step's channels holds "
              f"{node_share:.0%} of the nodes and {edge_share:.0%} of the edges on average", flush=True)
        for encoder in args.encoders:
            runs = [one_search(network_setup, encoder, seed, args.iterations, args.steps)
                    for seed in range(args.repeats)]
            row = [network.name, encoder] + [summary([r[c] for r in runs], digits.get(c, 0)) for c in columns]
            rows.append(row)
            print("  " + " | ".join(row), flush=True)
    print()
    header = ("network", "encoder", *columns)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
