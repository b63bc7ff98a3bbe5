"""One agent for many networks: shared training, the agent file, and pruning an unseen network with it."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import self_labelled_search
from torch import nn

from graphprune.errors import GraphpruneError
from graphprune.methods.base import BudgetedEvaluator, MethodContext, get_method
from graphprune.methods.gat_ppo import build_search
from graphprune.methods.gat_ppo.shared import AGENT_FORMAT, SharedAgentTrainer, TrainingTask, load_agent
from graphprune.methods.settings import AgentSettings
from graphprune.network.cost import parse_target

INPUT_SHAPE = (1, 8, 8)


class ConvStack(nn.Module):
    """`depth` conv-BN-ReLU layers of `width` channels and a linear head: networks of different sizes."""

    def __init__(self, depth: int, width: int):
        super().__init__()
        layers, cin = [], 1
        for _ in range(depth):
            layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            cin = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width, 10)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def network(depth: int, width: int, seed: int) -> dict:
    """A random network, its groups, cost, graph and an evaluator whose labels are its own predictions."""
    torch.manual_seed(seed)
    model = ConvStack(depth, width).eval()
    groups, cost, evaluator, graph = self_labelled_search(model, torch.randn(128, *INPUT_SHAPE), calibration_images=64)
    return {"model": model, "groups": groups, "cost": cost, "evaluator": evaluator, "graph": graph}


@pytest.fixture(scope="module")
def networks():
    return {"seen_a": network(3, 12, 0), "seen_b": network(4, 8, 1), "unseen": network(5, 10, 2)}


def settings(**overrides) -> AgentSettings:
    base = dict(episodes_per_iteration=8, num_envs=4, update_repeats=2, batch_size=32, margin_lr=0.03,
                policy={"budget_prior": True})
    base.update(overrides)
    return AgentSettings(**base)


def context(net: dict, evaluator=None, **extra) -> MethodContext:
    return MethodContext(net["model"], net["groups"], net["cost"], net["graph"], evaluator or net["evaluator"], **extra)


def trainer(networks, out_dir, agent_settings=None) -> SharedAgentTrainer:
    tasks = [TrainingTask(name, context(networks[name]), parse_target(budget), {"experiment": name})
             for name in ("seen_a", "seen_b") for budget in ("flops0.3", "flops0.6")]
    return SharedAgentTrainer(tasks, agent_settings or settings(), iterations=3, seed=0, out_dir=out_dir)


def train(networks, out_dir, stop_after_rounds=None) -> dict:
    t = trainer(networks, out_dir)
    try:
        return t.run(stop_after_rounds=stop_after_rounds)
    finally:
        t.close()


@pytest.fixture(scope="module")
def agent_dir(networks, tmp_path_factory):
    out = tmp_path_factory.mktemp("agent")
    train(networks, out)
    return out


def test_agent_file_holds_weights_settings_and_what_it_saw(agent_dir):
    state = torch.load(agent_dir / "agent.pt", weights_only=True)  # no pickled objects
    assert state["format"] == AGENT_FORMAT and state["iterations"] == state["rounds_done"] == 3
    assert [n["experiment"] for n in state["networks"]] == ["seen_a"] * 2 + ["seen_b"] * 2
    assert state["budgets"] == ["flops0.3", "flops0.6"] and state["episodes"] == 3 * 4 * 8
    assert not any(key.endswith(("x_static", "edge_index", "slot_nodes")) for key in state["weights"])  # no graph
    agent = load_agent(agent_dir / "agent.pt")
    assert agent.settings == settings() and 0.0 <= agent.margin_fraction <= 0.5
    log = pd.read_csv(agent_dir / "training.csv")
    assert len(log) == 12 and sorted(log["round"].unique()) == [0, 1, 2] and log["task"].nunique() == 4


def test_every_task_trains_the_same_weights(networks, tmp_path):
    """share_from hands on weights and optimizer state: a task continues exactly where the previous one ended."""
    t = trainer(networks, tmp_path)
    try:
        first, last = t.searches[0], t.searches[-1]
        assert first.out_dir.name != last.out_dir.name
        first.iterate(8)
        last.share_from(first)
        for key, value in first.weights().items():
            assert torch.equal(value, last.weights()[key]), key
        optimizers = "_optimizers"
        assert str(first.algorithm.state_dict()[optimizers]) == str(last.algorithm.state_dict()[optimizers])
    finally:
        t.close()


def test_interrupted_training_resumes_exactly(networks, agent_dir, tmp_path):
    train(networks, tmp_path, stop_after_rounds=1)
    assert (tmp_path / "round.txt").read_text().strip() == "1"
    train(networks, tmp_path)
    whole, resumed = load_agent(agent_dir / "agent.pt"), load_agent(tmp_path / "agent.pt")
    for key, value in whole.weights.items():
        assert torch.equal(value, resumed.weights[key]), key
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "training.csv"), pd.read_csv(agent_dir / "training.csv"))


@pytest.mark.parametrize("evaluations", [1, 12])
def test_transfer_prunes_an_unseen_network_within_its_evaluations(networks, agent_dir, tmp_path, evaluations):
    net = networks["unseen"]
    budget = parse_target("flops0.4")
    result = get_method("gat_ppo_transfer").search(
        context(net, seed=0, out_dir=tmp_path, evaluations=evaluations), budget,
        {"agent": str(agent_dir / "agent.pt")})
    record = result.record
    assert net["cost"].meets(budget, result.mask.counts)
    assert record["masks_evaluated"] == evaluations == record["evaluations"]
    assert record["search_top1"] >= record["greedy_first_search_top1"]  # the greedy mask is one candidate
    if evaluations == 1:  # nothing but the greedy mask
        assert record["search_top1"] == record["greedy_first_search_top1"] and record["episodes"] == 0
    assert [n["experiment"] for n in record["agent_networks"]] == ["seen_a"] * 2 + ["seen_b"] * 2


def test_transfer_without_training_leaves_the_agent_as_it_is(networks, agent_dir, tmp_path):
    agent = load_agent(agent_dir / "agent.pt")
    net = networks["unseen"]
    search = build_search(context(net, BudgetedEvaluator(net["evaluator"], 16), out_dir=tmp_path),
                          parse_target("flops0.4"), agent.settings)
    try:
        search.load_weights(agent.weights)
        search.learn = False
        search.run()
        assert len(search.log_rows) >= 8
        for key, value in agent.weights.items():
            assert torch.equal(value, search.weights()[key]), key
    finally:
        search.close()


def test_bad_agent_files_are_clear_errors(networks, agent_dir, tmp_path):
    run = get_method("gat_ppo_transfer")
    net = networks["unseen"]
    for path, message in ((tmp_path / "missing.pt", "does not exist"), (tmp_path / "corrupt.pt", "cannot read"),
                          (tmp_path / "other.pt", "not a graphprune agent")):
        if path.name == "corrupt.pt":
            path.write_bytes(b"not a checkpoint")
        if path.name == "other.pt":
            torch.save({"state_dict": {}}, path)
        with pytest.raises(GraphpruneError, match=message):
            run.search(context(net, out_dir=tmp_path / "search", evaluations=4), parse_target("flops0.5"),
                       {"agent": str(path)})
    state = torch.load(agent_dir / "agent.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "weights"}, tmp_path / "no_weights.pt")
    with pytest.raises(GraphpruneError, match="lacks weights"):
        run.search(context(net, out_dir=tmp_path / "search1", evaluations=4), parse_target("flops0.5"),
                   {"agent": str(tmp_path / "no_weights.pt")})
    state["settings"]["policy"]["hidden"] = 16  # weights of a 32-wide policy under 16-wide settings
    torch.save(state, tmp_path / "narrow.pt")
    with pytest.raises(GraphpruneError, match="shape"):
        run.search(context(net, out_dir=tmp_path / "search2", evaluations=4), parse_target("flops0.5"),
                   {"agent": str(tmp_path / "narrow.pt")})
    with pytest.raises(GraphpruneError, match="needs `agent`"):
        run.search(context(net, out_dir=tmp_path / "search3", evaluations=4), parse_target("flops0.5"), {})


def test_shared_agent_needs_the_budget_prior(networks, tmp_path):
    with pytest.raises(GraphpruneError, match="budget_prior"):
        trainer(networks, tmp_path, AgentSettings(episodes_per_iteration=8, num_envs=4, policy={"budget_prior": False}))


def test_users_prune_their_own_network_with_a_trained_agent(agent_dir):
    """graphprune.prune with method gat_ppo_transfer: the agent file and K evaluations, nothing else."""
    import graphprune

    torch.manual_seed(4)
    model = ConvStack(4, 10).eval()
    images = torch.randn(96, *INPUT_SHAPE)
    with torch.no_grad():
        labels = model(images).argmax(1)
    data = graphprune.PruneData.split(torch.utils.data.TensorDataset(images, labels), search_size=0.25)
    result = graphprune.prune(model, images[:2], "flops0.5", method="gat_ppo_transfer", data=data,
                              settings={"agent": str(agent_dir / "agent.pt")}, evaluations=6,
                              latency_batch_sizes=())
    assert result.metrics.masks_evaluated == 6 and result.metrics.flops_ratio <= 0.5 + 1e-9
    assert result.metrics.max_abs_diff_masked_vs_pruned < 1e-4
