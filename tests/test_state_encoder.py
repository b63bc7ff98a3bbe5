"""The state-aware encoders (`gat_state`, its no-attention ablation `mean_state`): the batched GATv2 pass, the
state in the embedding, the pass shared by actor and critic, searches and their reproducibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_gat_ppo import _agent_tensors, planted_toy, run_search, small_settings
from tianshou.data import Batch
from torch_geometric.data import Batch as GraphBatch
from torch_geometric.data import Data

from graphprune.methods.base import MethodContext, get_method
from graphprune.methods.gat_ppo import policy
from graphprune.methods.gat_ppo.agent import AgentSettings
from graphprune.methods.gat_ppo.policy import GraphCritic, GraphEncoder
from graphprune.methods.settings import ENCODERS, PolicySettings
from graphprune.network.cost import parse_target

STATE_ENCODERS = ["gat_state", "mean_state"]


@pytest.fixture(scope="module")
def toy():
    return planted_toy()


@pytest.fixture(scope="module")
def graph(toy):
    return toy[-1]


def states(graph, count: int, seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    channels = graph.num_channel_nodes
    return Batch(kept=rng.integers(0, 2, (count, channels)).astype(np.float32),
                 decided=rng.integers(0, 2, (count, channels)).astype(np.float32),
                 budget=rng.random((count, 6)).astype(np.float32))


def one(obs: Batch, i: int) -> Batch:
    return Batch(kept=obs.kept[i : i + 1], decided=obs.decided[i : i + 1], budget=obs.budget[i : i + 1])


@pytest.mark.parametrize("encoder", STATE_ENCODERS)
def test_shapes_and_a_batch_of_states_equals_single_states(graph, encoder):
    torch.manual_seed(0)
    encoder = GraphEncoder(graph, PolicySettings(encoder=encoder))
    critic = GraphCritic(encoder, 32)
    obs = states(graph, 5, seed=0)
    nodes = torch.randint(0, graph.num_channel_nodes, (5, 7))
    everything, budget = encoder(obs)
    chosen, _ = encoder(obs, nodes)
    assert everything.shape == (5, graph.num_nodes, 32) and chosen.shape == (5, 7, 32) and budget.shape == (5, 6)
    torch.testing.assert_close(chosen, torch.gather(everything, 1, nodes[..., None].expand(-1, -1, 32)))
    torch.testing.assert_close(torch.cat([encoder(one(obs, i), nodes[i : i + 1])[0] for i in range(5)]), chosen)
    values = critic(obs)
    assert values.shape == (5, 1)
    torch.testing.assert_close(torch.cat([critic(one(obs, i)) for i in range(5)]), values)


def test_batched_attention_equals_gatv2conv_on_disjoint_copies(graph, monkeypatch):
    """The state-aware GATv2 pass gives what GATv2Conv gives on PyG's mini-batch of the B copies of the graph,
    forward and backward, in one block of edges or in one block per target node."""
    torch.manual_seed(0)
    encoder = GraphEncoder(graph, PolicySettings(encoder="gat_state"))
    conv = encoder.layers[0]
    conv.add_self_loops = True  # the reference: GATv2Conv making its self-loops, as PyG runs it
    x = torch.randn(graph.num_nodes, 4, 32, requires_grad=True)
    copies = GraphBatch.from_data_list([Data(x=x[:, i], edge_index=graph.data.edge_index,
                                             edge_attr=graph.data.edge_attr.float()) for i in range(4)])
    expected = conv(copies.x, copies.edge_index, copies.edge_attr).view(4, graph.num_nodes, -1).transpose(0, 1)
    probe = torch.randn_like(expected)
    expected_grad = torch.autograd.grad((expected * probe).sum(), [x, conv.att, conv.lin_edge.weight])
    for block_floats in (policy.EDGE_BLOCK_FLOATS, 1):  # 1: every block holds a single target node
        monkeypatch.setattr(policy, "EDGE_BLOCK_FLOATS", block_floats)
        encoder._blocks.clear()
        got = encoder._attention(conv, x)
        torch.testing.assert_close(got, expected)
        for g, e in zip(torch.autograd.grad((got * probe).sum(), [x, conv.att, conv.lin_edge.weight]),
                        expected_grad, strict=True):
            torch.testing.assert_close(g, e)
    assert len(encoder._edge_blocks(4 * 32)[0]) == graph.num_nodes


@pytest.mark.parametrize("encoder", STATE_ENCODERS)
def test_decisions_change_the_embedding_of_other_nodes(graph, encoder):
    """Keeping other channels of the first layer changes the layers' output at nodes whose own state did not
    change: the decisions travel through the message passing (for gat_state, through attention)."""
    torch.manual_seed(0)
    encoder = GraphEncoder(graph, PolicySettings(encoder=encoder))
    first_group = graph.channel_nodes[0]
    obs = states(graph, 1, seed=0)
    other = Batch(kept=obs.kept.copy(), decided=obs.decided.copy(), budget=obs.budget.copy())
    other.kept[0, first_group] = 1 - other.kept[0, first_group]
    with torch.no_grad():
        before = encoder.state_embedding(obs, encoder.state_views(obs)[0])[:, 0]  # [N, H]
        after = encoder.state_embedding(other, encoder.state_views(other)[0])[:, 0]
    unchanged = torch.ones(graph.num_nodes, dtype=torch.bool)
    unchanged[first_group] = False
    moved = (before - after).abs().amax(-1) > 1e-6
    assert moved[unchanged].sum() >= 5, moved


def test_actor_and_critic_share_one_pass_until_the_weights_change(graph):
    torch.manual_seed(0)
    encoder = GraphEncoder(graph, PolicySettings(encoder="gat_state"))
    obs = states(graph, 3, seed=0)
    dynamic = encoder.state_views(obs)[0]
    first = encoder.state_embedding(obs, dynamic)
    assert encoder.state_embedding(obs, dynamic) is first
    copy = states(graph, 3, seed=0)  # the same values in another object: computed again, the same numbers
    again = encoder.state_embedding(copy, dynamic)
    assert again is not first
    torch.testing.assert_close(again, first)
    with torch.no_grad():
        encoder.layers[0].att.mul_(3.0)  # as an optimizer step would
    changed = encoder.state_embedding(copy, dynamic)
    assert changed is not again and not torch.equal(changed, again)
    with torch.no_grad():
        assert encoder.state_embedding(copy, dynamic) is not changed  # another gradient mode
    encoder.forget_static()
    assert encoder._state_cache is None


def test_settings_name_the_allowed_encoders():
    with pytest.raises(ValueError, match="encoder must be one of") as error:
        PolicySettings(encoder="gat_stat")
    assert all(name in str(error.value) for name in ENCODERS)
    for name in ENCODERS:  # every listed encoder is accepted, from a config mapping too
        assert AgentSettings(policy={"encoder": name}).policy.encoder == name


def test_the_graph_feature_ablation_hides_exactly_the_channel_statistics(graph):
    """`channel_statistics: false` zeroes the weight and activation statistics of every node and nothing else;
    the encoder's outputs then no longer depend on them."""
    from graphprune.network.graph import CHANNEL_STATISTICS

    torch.manual_seed(0)
    seen = GraphEncoder(graph, PolicySettings())
    torch.manual_seed(0)
    hidden = GraphEncoder(graph, PolicySettings(channel_statistics=False))
    columns = [graph.feature_names.index(name) for name in CHANNEL_STATISTICS]
    assert len(columns) == 11 and (seen.x_static[:, columns] != 0).any()
    assert (hidden.x_static[:, columns] == 0).all()
    others = [i for i in range(seen.x_static.shape[1]) if i not in columns]
    assert torch.equal(hidden.x_static[:, others], seen.x_static[:, others])
    with torch.no_grad():
        assert not torch.allclose(seen.static_embedding(), hidden.static_embedding())
    assert AgentSettings(policy={"channel_statistics": False}).policy.channel_statistics is False


@pytest.mark.parametrize("encoder", STATE_ENCODERS)
def test_short_search_meets_the_budget(toy, tmp_path, encoder):
    model, groups, cost, evaluator, graph = toy
    context = MethodContext(model, groups, cost, graph, evaluator, seed=0, out_dir=tmp_path, evaluations=16)
    settings = small_settings(episodes_per_iteration=8, policy={"encoder": encoder}).to_dict()
    result = get_method("gat_ppo").search(context, parse_target("flops0.3"), settings)
    assert cost.meets(parse_target("flops0.3"), result.mask.counts)
    assert result.record["masks_evaluated"] == 16 and result.record["stop_reason"] == "evaluations"
    iterations = pd.read_csv(tmp_path / "iterations.csv")
    assert len(iterations) >= 2 and np.isfinite(iterations["policy_loss"]).all()


def test_gat_state_search_is_bitwise_reproducible_with_two_threads(toy, tmp_path):
    """Two gat_state searches (two iterations each) with two torch threads end with the same log, mask and
    agent, bit for bit. hidden=64 makes the per-edge tensors of a minibatch ([edges, 24 states, 64], about a
    million floats) large enough for torch's multithreaded kernels."""
    settings = small_settings(episodes_per_iteration=8, policy={"encoder": "gat_state", "hidden": 64})
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _, first = run_search(toy, tmp_path / "first", settings, evaluations=16)
        _, second = run_search(toy, tmp_path / "second", settings, evaluations=16)
    finally:
        torch.set_num_threads(threads)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "second" / "log.csv"),
                                  pd.read_csv(tmp_path / "first" / "log.csv"), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "second" / "iterations.csv"),
                                  pd.read_csv(tmp_path / "first" / "iterations.csv"), check_exact=True)
    assert first.mask == second.mask
    agents = [_agent_tensors(tmp_path / run) for run in ("first", "second")]
    assert agents[0].keys() == agents[1].keys()
    assert [k for k in agents[0] if not torch.equal(agents[0][k], agents[1][k])] == []
