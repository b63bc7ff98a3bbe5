"""The network graph: node and edge counts, index maps, features, top-k, dynamic columns, save/load."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
import yaml
from conftest import traced_model
from torch import nn

from graphprune import cli
from graphprune.checkpoint import save_model
from graphprune.config import load_config
from graphprune.errors import GraphpruneError
from graphprune.models import ModelSpec, build_model
from graphprune.network.cost import CostModel
from graphprune.network.graph import (
    CHANNEL_FEATURES,
    DYNAMIC_FEATURES,
    EDGE_ATTR_NAMES,
    EDGE_TYPES,
    FEATURE_NAMES,
    LAYER_TYPES,
    NetworkGraph,
    build_graph,
    trace_layers,
)
from graphprune.network.pruning import ChannelGroups, build_dependency_graph
from graphprune.stages.graph import calibration_batch

FAST_MODELS = [
    ModelSpec("resnet20", in_channels=1, input_size=8),
    ModelSpec("resnet56"),
    ModelSpec("vgg16_bn"),
    ModelSpec("mobilenetv2"),
]
SLOW_MODELS = [
    ModelSpec(f"torchvision:{name}", input_size=64)
    for name in ("resnet18", "resnet50", "mobilenet_v2", "densenet121", "efficientnet_b0")
]


@functools.cache
def built(spec: ModelSpec, top_k: int | None = 8):
    """(model, groups, cost, graph) for a spec and top_k, built once per test session."""
    model, groups, cost = traced_model(spec)
    calibration = torch.randn(4, *spec.input_shape, generator=torch.Generator().manual_seed(1))
    return model, groups, cost, build_graph(model, groups, cost, calibration, top_k=top_k)


def edges_of(graph: NetworkGraph, edge_type: str) -> torch.Tensor:
    return graph.data.edge_index[:, graph.data.edge_type == EDGE_TYPES.index(edge_type)]


def expected_layer_count(model: nn.Module, input_shape) -> int:
    """Counted from the DependencyGraph: every node but views and the Linear weight transposes."""
    dependency_graph = build_dependency_graph(model, input_shape)
    views = (tp.ops.OPTYPE.RESHAPE, tp.ops.OPTYPE.EXPAND)
    return sum(1 for node in dependency_graph.module2node.values()
               if node.type not in views and "TBackward" not in str(node.module))


def check_graph(spec: ModelSpec) -> None:
    model, groups, cost, graph = built(spec)
    data = graph.data
    num_channels = sum(groups.sizes)
    num_nodes = data.x.shape[0]

    assert graph.num_channel_nodes == num_channels
    assert graph.num_layer_nodes == expected_layer_count(model, spec.input_shape)
    assert num_nodes == graph.num_nodes == num_channels + len(graph.layer_names)
    assert len(set(graph.layer_names)) == len(graph.layer_names)
    assert set(graph.layer_types) <= set(LAYER_TYPES)
    assert data.x.shape == (num_nodes, len(FEATURE_NAMES)) and torch.isfinite(data.x).all()
    assert torch.equal(data.node_type, (torch.arange(num_nodes) >= num_channels).long())

    assert data.edge_index.shape[0] == 2 and data.edge_index.dtype == torch.long
    assert data.edge_index.min() >= 0 and data.edge_index.max() < num_nodes
    assert data.edge_attr.shape == (data.edge_index.shape[1], len(EDGE_ATTR_NAMES))
    assert torch.isfinite(data.edge_attr).all()
    assert torch.equal(data.edge_attr[:, :len(EDGE_TYPES)].argmax(1), data.edge_type)
    assert (data.edge_attr[:, :len(EDGE_TYPES)].sum(1) == 1).all()

    is_channel = data.node_type == 0
    for forward, reverse, source_is_channel, target_is_channel in [
        ("layer_flow", "layer_flow_reverse", False, False),
        ("channel_flow", "channel_flow_reverse", True, True),
        ("channel_to_out_layer", "out_layer_to_channel", True, False),
        ("channel_to_in_layer", "in_layer_to_channel", True, False),
    ]:
        edges = edges_of(graph, forward)
        assert edges.shape[1] > 0, forward
        assert (is_channel[edges[0]] == source_is_channel).all()
        assert (is_channel[edges[1]] == target_is_channel).all()
        assert torch.equal(edges_of(graph, reverse), edges.flip(0)), reverse

    # Index maps: contiguous channel nodes per group, in root-channel order.
    for g, size in enumerate(groups.sizes):
        nodes = graph.channel_nodes[g]
        assert len(nodes) == size
        assert (graph.group_of_node[nodes] == g).all()
        assert torch.equal(graph.channel_of_node[nodes], torch.arange(size))
    assert (graph.group_of_node[num_channels:] == -1).all()
    assert (graph.channel_of_node[num_channels:] == -1).all()

    # Every channel node is linked to its group's root layer.
    out_edges = edges_of(graph, "channel_to_out_layer")
    linked = set(zip(out_edges[0].tolist(), out_edges[1].tolist(), strict=True))
    root_of_channel = graph.root_layer_nodes[graph.group_of_node[:num_channels]]
    assert all((c, int(r)) in linked for c, r in enumerate(root_of_channel))
    assert [graph.layer_names[int(n) - num_channels] for n in graph.root_layer_nodes] == list(groups.roots)

    # Top-k strongest inputs per target channel, weights normalised per layer.
    channel_flow = edges_of(graph, "channel_flow")
    assert torch.bincount(channel_flow[1], minlength=num_nodes).max() <= graph.top_k
    weights = data.edge_attr[data.edge_type == EDGE_TYPES.index("channel_flow"), -1]
    assert (weights > 0).all() and (weights <= 1).all()


@pytest.mark.parametrize("spec", FAST_MODELS, ids=lambda s: s.name)
def test_graph_invariants(spec):
    check_graph(spec)


@pytest.mark.slow
@pytest.mark.parametrize("spec", SLOW_MODELS, ids=lambda s: s.name)
def test_graph_invariants_torchvision(spec):
    check_graph(spec)


RESNET20 = FAST_MODELS[0]


def test_resnet20_layers_counted_by_hand():
    _, _, _, graph = built(RESNET20)
    counts = {t: graph.layer_types.count(t) for t in set(graph.layer_types)}
    # 19 convs + 2 downsample convs, a BN after each, 19 ReLUs, 9 residual adds, global pool, classifier.
    assert counts == {"conv": 21, "bn": 21, "activation": 19, "add": 9, "pool": 1, "linear": 1}


def test_skip_connection_bypasses_a_block():
    _, _, _, graph = built(RESNET20)
    sources, targets = edges_of(graph, "layer_flow").tolist()
    flow = list(zip(sources, targets, strict=True))
    block_input = graph.layer_node("layer1.1.conv1")
    block_output = graph.layer_node("layer1.1.bn2")
    feeders_of_block = {s for s, t in flow if t == block_input}
    is_add = [t == "add" for t in graph.layer_types]
    adds = [t for s, t in flow if s == block_output and is_add[t - graph.num_channel_nodes]]
    assert len(adds) == 1
    # The add also receives the block's input directly: an edge that skips conv1, bn1, relu, conv2, bn2.
    skips = {s for s, t in flow if t == adds[0]} & feeders_of_block
    block = {graph.layer_node(f"layer1.1.{name}") for name in ("conv1", "bn1", "conv2", "bn2")}
    assert skips and not skips & block


def test_top_k_limits_channel_edges():
    spec = RESNET20
    _, groups, _, default = built(spec)
    _, _, _, narrow = built(spec, top_k=2)
    _, _, _, full = built(spec, top_k=None)
    def in_degree(graph):
        return torch.bincount(edges_of(graph, "channel_flow")[1], minlength=graph.num_nodes)
    assert in_degree(narrow).max() == 2
    assert in_degree(default).max() == 8
    # Without a limit every channel of layer1.0.conv1's group hears from all 16 channels it reads.
    group = groups.roots.index("layer1.0.conv1")
    assert (in_degree(full)[full.channel_nodes[group]] == 16).all()
    # The kept edges are the strongest ones.
    target = int(default.channel_nodes[group][0])
    def incoming(graph):
        edges = edges_of(graph, "channel_flow")
        weights = graph.data.edge_attr[graph.data.edge_type == EDGE_TYPES.index("channel_flow"), -1]
        into_target = edges[1] == target
        return dict(zip(edges[0][into_target].tolist(), weights[into_target].tolist(), strict=True))
    strongest = sorted(incoming(full).values(), reverse=True)[:8]
    assert sorted(incoming(default).values(), reverse=True) == pytest.approx(strongest)


def test_channel_features_match_the_weights():
    model, groups, cost, graph = built(RESNET20)
    x = graph.data.x
    column = {name: FEATURE_NAMES.index(name) for name in FEATURE_NAMES}
    group = groups.groups[0]
    nodes = graph.channel_nodes[0]
    filters = dict(model.named_modules())[group.root].weight.detach().flatten(1)
    l1 = filters.abs().mean(1)
    all_l1 = x[: graph.num_channel_nodes, column["l1_norm"]]
    assert all_l1.max() == pytest.approx(1.0)
    ratio = x[nodes, column["l1_norm"]] / l1
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4)
    assert torch.equal(x[nodes, column["l1_rank_in_group"]].argsort(), l1.argsort())
    counts = list(groups.sizes)
    counts[0] -= 1
    expected = (cost.full_flops - cost.flops(counts)) / cost.full_flops
    assert x[nodes, column["flops_saved"]] == pytest.approx(torch.full((len(nodes),), expected))
    assert (x[: graph.num_channel_nodes, column["act_std"]] >= 0).all()
    assert (x[graph.num_channel_nodes:, [column[n] for n in CHANNEL_FEATURES]] == 0).all()


def test_state_columns_hold_the_state_before_any_decision():
    _, _, _, graph = built(RESNET20)
    x, c = graph.data.x, graph.num_channel_nodes
    assert graph.dynamic_columns == slice(len(FEATURE_NAMES) - 3, len(FEATURE_NAMES))
    assert [FEATURE_NAMES[i] for i in range(len(FEATURE_NAMES))[graph.dynamic_columns]] == list(DYNAMIC_FEATURES)
    assert (x[:, FEATURE_NAMES.index("decided")] == 0).all()
    assert (x[:c, FEATURE_NAMES.index("kept")] == 1).all() and (x[c:, FEATURE_NAMES.index("kept")] == 0).all()
    assert (x[:, FEATURE_NAMES.index("budget_left")] == 0).all()


def test_save_load_round_trip(tmp_path):
    _, _, _, graph = built(RESNET20)
    path = tmp_path / "graph.pt"
    graph.save(path)
    assert isinstance(torch.load(path, weights_only=True), dict)
    loaded = NetworkGraph.load(path)
    for key in ("x", "edge_index", "edge_attr", "edge_type", "node_type"):
        assert torch.equal(loaded.data[key], graph.data[key]), key
    for attr in ("group_sizes", "group_roots", "layer_names", "layer_types", "feature_names", "top_k"):
        assert getattr(loaded, attr) == getattr(graph, attr), attr
    assert torch.equal(loaded.group_of_node, graph.group_of_node)
    assert torch.equal(loaded.root_layer_nodes, graph.root_layer_nodes)
    assert loaded.summary() == graph.summary()


def test_load_rejects_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(GraphpruneError, match="missing.pt"):
        NetworkGraph.load(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(GraphpruneError, match="corrupt.pt"):
        NetworkGraph.load(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(GraphpruneError, match="foreign.pt"):
        NetworkGraph.load(foreign)


def test_summary_is_plain_json():
    _, _, _, graph = built(RESNET20)
    summary = json.loads(json.dumps(graph.summary()))
    assert summary["nodes"] == {"channel": 448, "layer": 72, "total": 520}
    assert sum(summary["edges"].values()) == summary["edges_total"] == graph.data.edge_index.shape[1]
    assert list(summary["features"]) == list(FEATURE_NAMES)
    assert summary["top_k"] == 8 and summary["build_seconds"] > 0


def test_build_leaves_the_model_unchanged():
    model, groups, cost, _ = built(RESNET20)
    model.train()
    try:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        build_graph(model, groups, cost, torch.randn(2, *RESNET20.input_shape))
        assert model.training
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    finally:
        model.eval()  # the shared model (conftest.traced_model)


class _BreaksAfterTracing(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 2)
        self.broken = False

    def forward(self, x):
        if self.broken:
            raise RuntimeError("data-dependent failure")
        return self.fc(self.conv(x).mean((2, 3)))


def test_untraceable_model_is_a_user_error():
    model = _BreaksAfterTracing()
    groups = ChannelGroups(model, (3, 8, 8))
    cost = CostModel(model, groups)
    model.broken = True
    with pytest.raises(GraphpruneError, match="cannot trace"):
        build_graph(model, groups, cost, torch.zeros(1, 3, 8, 8))
    with pytest.raises(GraphpruneError, match="cannot trace"):
        trace_layers(model, (3, 8, 8))


def test_bad_arguments_are_user_errors():
    model, groups, cost, _ = built(RESNET20)
    with pytest.raises(GraphpruneError, match="calibration batch"):
        build_graph(model, groups, cost, torch.zeros(2, 3, 8, 8))
    with pytest.raises(GraphpruneError, match="top_k"):
        build_graph(model, groups, cost, torch.zeros(2, *RESNET20.input_shape), top_k=0)


def write_config(folder: Path) -> Path:
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "results_dir": str(folder / "results"),
        "device": "cpu",
        "experiments": {"digits-resnet20": {
            "seed": 3, "dataset": {"name": "digits", "search_size": 300}, "model": {"name": "resnet20"},
            "pretrain": {"epochs": 1, "batch_size": 64},
        }},
    }))
    return config_path


def test_graph_command_writes_graph_and_summary(tmp_path):
    config_path = write_config(tmp_path)
    config = load_config(config_path)
    experiment = config.experiment("digits-resnet20")
    paths = config.paths(experiment.name)
    torch.manual_seed(0)
    save_model(paths.baseline_model(), build_model(experiment.model), experiment.model, {})

    assert cli.main(["graph", "--config", str(config_path), "--experiment", experiment.name,
                     "--calibration-size", "8"]) == 0
    graph = NetworkGraph.load(paths.graph())
    summary = json.loads(Path(paths.graph_summary()).read_text())
    assert summary["nodes"] == {"channel": 448, "layer": 72, "total": 520}
    assert summary["calibration"] == {"split": "train", "images": 8, "seed": 3}
    assert summary["edges_total"] == graph.data.edge_index.shape[1]
    assert torch.equal(calibration_batch(experiment, 8), calibration_batch(experiment, 8))
    assert not torch.equal(calibration_batch(experiment, 8), calibration_batch(experiment, 9)[1:])


def test_graph_command_without_baseline_is_a_user_error(tmp_path, capsys):
    config_path = write_config(tmp_path)
    assert cli.main(["graph", "--config", str(config_path), "--experiment", "digits-resnet20"]) == 2
    assert "baseline/model.pt" in capsys.readouterr().err
