"""The network as a torch-geometric graph: the pruning agent's observation (docs/GRAPH.md).

Nodes: first one *channel node* per channel of every prunable group (the decision units, groups in order,
root-channel order inside a group), then one *layer node* per layer or traced operation of the network (the
nodes of Torch-Pruning's DependencyGraph, in topological order). Edges: data flow between layers, weight-slice
strength between channels of consecutive layers (top-k per target channel), membership between a group's
channels and the layers it touches; each kind also has its reverse type. Node features are static
(structure, filter norms, BN, activation statistics on a calibration batch, cost saved) plus three state
columns (`DYNAMIC_FEATURES`) holding the state before any decision; the gat_ppo policy zeroes them and reads
the state from its observations instead (`NetworkGraph.dynamic_columns`).

This module knows nothing of RL, masks or budgets beyond those three columns, never changes the model's
weights, and never counts costs itself (that is `cost.CostModel`'s job).
"""

from __future__ import annotations

import collections
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch_pruning as tp
from torch import Tensor, nn

from graphprune.checkpoint import atomic_torch_save, load_checkpoint
from graphprune.errors import GraphpruneError
from graphprune.network.budget import METRICS
from graphprune.network.evaluate import evaluation_mode
from graphprune.network.pruning import ChannelGroups, GroupMember, build_dependency_graph
from graphprune.network.root_channels import member_channels, per_root_channel

if TYPE_CHECKING:
    from torch_geometric.data import Data

    from graphprune.network.cost import CostModel

# torch-geometric is imported where a graph is built or loaded: importing it takes ~3 s, which the methods
# that only trace layers (AMC, GNN-RL's group order) need not pay.

GRAPH_FORMAT = "graphprune.graph/1"
# How a graph is built by default (the `graph` stage and `graphprune.prune` alike): the strongest input-channel
# edges kept per channel, and the training images whose activations give the activation features.
TOP_K = 8
CALIBRATION_IMAGES = 64

NODE_TYPES = ("channel", "layer")
CHANNEL_NODE, LAYER_NODE = 0, 1
LAYER_TYPES = ("conv", "depthwise_conv", "linear", "bn", "add", "concat", "pool", "activation", "other")

# Every relation comes with its reverse: GATv2 aggregates only along edge direction, and a channel's
# importance depends on its consumers (downstream layers and channels) as much as on its producers.
EDGE_TYPES = (
    "layer_flow",  # layer -> the next layer it feeds (skip connections included)
    "layer_flow_reverse",
    "channel_flow",  # input channel i of group g -> output channel j of group h, through one conv/linear
    "channel_flow_reverse",
    "channel_to_out_layer",  # channel -> a layer that writes it (conv, bn: the group's "out" members)
    "out_layer_to_channel",
    "channel_to_in_layer",  # channel -> a layer that reads it (the next conv/linear: "in" members)
    "in_layer_to_channel",
)
EDGE_ATTR_NAMES = (*(f"edge_{name}" for name in EDGE_TYPES), "weight")

STRUCTURE_FEATURES = (
    "node_channel", "node_layer",
    *(f"layer_{name}" for name in LAYER_TYPES),  # a channel node carries its group root's layer type
    "depth",  # longest-path level of the layer (of a channel: its root layer) / the deepest level
    "kernel",  # kernel size / largest kernel
    "stride",  # log2(stride) / largest
    "groups_log",  # log2(conv groups) / largest
    "width_log",  # log2(output width) / largest
)
CHANNEL_STATISTICS = (  # what a channel's weights and activations say of it; zero on layer nodes
    "l1_norm",  # mean |w| of the root filter / the largest over all channels
    "l2_norm",  # root-mean-square of the root filter / the largest over all channels
    "l1_rank_in_group", "l1_rank_global",  # rank of l1_norm in [0, 1]; 1 = largest
    "l2_rank_in_group", "l2_rank_global",
    "has_bn",  # 1 if a BatchNorm writes the group's channels
    "bn_gamma", "bn_beta",  # of the group's first BatchNorm, / the largest |value| over all channels
    "act_mean", "act_std",  # calibration batch, at that BN's output (else the root's), / largest |value|
)
CHANNEL_FEATURES = (  # zero on layer nodes
    *CHANNEL_STATISTICS,
    # removing one channel of the group, as a fraction of the full network's, per analytic metric (flops, params)
    *(f"{name}_saved" for name, metric in METRICS.items() if metric.graph_feature),
)
# The state, as stored: before any decision (decided 0, kept 1 on channel nodes, budget_left 0). The policy
# zeroes these columns; they stay in the layout because its input width, and so its initial weights, count them.
DYNAMIC_FEATURES = (
    "decided",  # channel nodes: its keep/prune decision is made (0 on layer nodes)
    "kept",  # channel nodes: currently kept (0 on layer nodes)
    "budget_left",  # broadcast to every node; units are the environment's (e.g. cost still to remove / full)
)
FEATURE_NAMES = (*STRUCTURE_FEATURES, *CHANNEL_FEATURES, *DYNAMIC_FEATURES)
DECIDED_COLUMN = FEATURE_NAMES.index("decided")
KEPT_COLUMN = FEATURE_NAMES.index("kept")
BUDGET_COLUMN = FEATURE_NAMES.index("budget_left")

_ACTIVATIONS = {
    "relu", "relu6", "hardtanh", "silu", "sigmoid", "gelu", "hardswish", "hardsigmoid", "tanh", "leakyrelu",
    "elu", "celu", "selu", "softplus", "mish", "prelu", "clamp", "threshold", "rrelu", "glu", "logsigmoid",
}
_MODULE_LAYER_TYPES = {
    tp.ops.OPTYPE.CONV: "conv", tp.ops.OPTYPE.DEPTHWISE_CONV: "depthwise_conv",
    tp.ops.OPTYPE.LINEAR: "linear", tp.ops.OPTYPE.BN: "bn", tp.ops.OPTYPE.CONCAT: "concat",
    tp.ops.OPTYPE.PRELU: "activation",
}
# Pure views: no computation, and the channel bookkeeping they imply (e.g. flatten before the classifier) is
# already in the groups' member indices. They are contracted away: their inputs link to their outputs.
_VIEW_TYPES = (tp.ops.OPTYPE.RESHAPE, tp.ops.OPTYPE.EXPAND)
_BATCH_NORMS = nn.modules.batchnorm._BatchNorm
_STORED_KEYS = {
    "format", "x", "edge_index", "edge_attr", "edge_type", "node_type", "group_sizes", "group_roots",
    "layer_names", "layer_types", "feature_names", "edge_type_names", "top_k", "build_seconds",
}


class NetworkGraph:
    """The graph of one network, with the index maps that tie its nodes to channel groups and layers.

    `data` is a PyG `Data` with
    - `x: [N, F]` float node features, columns named by `feature_names` (= FEATURE_NAMES);
    - `edge_index: [2, E]` (source, target) node ids; `edge_type: [E]` index into `edge_type_names`;
    - `edge_attr: [E, A]` = one-hot edge type (len(EDGE_TYPES) columns) then `weight` (EDGE_ATTR_NAMES);
    - `node_type: [N]` 0 = channel, 1 = layer (NODE_TYPES).
    Node ids 0..C-1 are the channel nodes (groups in order, root-channel order inside a group), C..N-1 the
    layer nodes in topological order (`layer_names[i]` is node C + i).
    """

    def __init__(
        self, data: Data, group_sizes: Sequence[int], group_roots: Sequence[str], layer_names: Sequence[str],
        layer_types: Sequence[str], top_k: int | None, build_seconds: float,
    ):
        self.data = data
        self.group_sizes = tuple(int(s) for s in group_sizes)
        self.group_roots = tuple(group_roots)
        self.layer_names = tuple(layer_names)
        self.layer_types = tuple(layer_types)
        self.top_k = top_k
        self.build_seconds = float(build_seconds)
        self.feature_names = FEATURE_NAMES
        self.edge_type_names = EDGE_TYPES
        self.edge_attr_names = EDGE_ATTR_NAMES
        sizes = torch.tensor(self.group_sizes, dtype=torch.long)
        offsets = torch.cumsum(sizes, 0) - sizes
        self.num_channel_nodes = int(sizes.sum())
        self.num_layer_nodes = len(self.layer_names)
        self.channel_nodes: list[Tensor] = [
            torch.arange(int(o), int(o) + int(s)) for o, s in zip(offsets, sizes, strict=True)
        ]
        channel_group = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
        no_channel = torch.full((self.num_layer_nodes,), -1, dtype=torch.long)
        self.group_of_node = torch.cat([channel_group, no_channel])  # [N], -1 on layer nodes
        self.channel_of_node = torch.cat([torch.arange(self.num_channel_nodes) - offsets[channel_group],
                                          no_channel])  # [N], root-channel index inside the group
        self._layer_index = {name: i for i, name in enumerate(self.layer_names)}
        self.root_layer_nodes = torch.tensor(
            [self.layer_node(root) for root in self.group_roots], dtype=torch.long
        )  # [G] node id of each group's root layer

    @property
    def num_nodes(self) -> int:
        return self.num_channel_nodes + self.num_layer_nodes

    @property
    def num_groups(self) -> int:
        return len(self.group_sizes)

    @property
    def dynamic_columns(self) -> slice:
        """The columns of `x` that hold the state (DYNAMIC_FEATURES, the last three)."""
        return slice(DECIDED_COLUMN, BUDGET_COLUMN + 1)

    def channel_feature(self, name: str) -> list[Tensor]:
        """One static channel feature (a CHANNEL_FEATURES name), split per group: [size] per group."""
        column = self.feature_names.index(name)
        return list(self.data.x[: sum(self.group_sizes), column].split(list(self.group_sizes)))

    def layer_node(self, name: str) -> int:
        """Node id of a layer: a module name (`layer1.0.conv1`) or a traced op name (`add#12`)."""
        if name not in self._layer_index:
            raise KeyError(f"no layer node named {name!r}")
        return self.num_channel_nodes + self._layer_index[name]

    def digest(self) -> str:
        """A short hash of the features and edges: it changes with the network's weights (filter norms, BN,
        activations), so a checkpoint can tell whether it was made on this very network."""
        sha = hashlib.sha256()
        for tensor in (self.data.x, self.data.edge_index, self.data.edge_attr):
            sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return sha.hexdigest()[:16]

    def to_dict(self) -> dict:
        """Tensors, lists, numbers and strings only: loadable with `torch.load(weights_only=True)`."""
        return {
            "format": GRAPH_FORMAT,
            "x": self.data.x, "edge_index": self.data.edge_index, "edge_attr": self.data.edge_attr,
            "edge_type": self.data.edge_type, "node_type": self.data.node_type,
            "group_sizes": list(self.group_sizes), "group_roots": list(self.group_roots),
            "layer_names": list(self.layer_names), "layer_types": list(self.layer_types),
            "feature_names": list(self.feature_names), "edge_type_names": list(self.edge_type_names),
            "top_k": self.top_k, "build_seconds": self.build_seconds,
        }

    @classmethod
    def from_dict(cls, stored: dict, source: str = "graph") -> NetworkGraph:
        missing = _STORED_KEYS - stored.keys()
        if missing or stored.get("format") != GRAPH_FORMAT:
            raise GraphpruneError(
                f"{source} is not a {GRAPH_FORMAT} file (missing {', '.join(sorted(missing)) or 'format'}); "
                "rebuild it with `graphprune graph`"
            )
        if tuple(stored["feature_names"]) != FEATURE_NAMES or tuple(stored["edge_type_names"]) != EDGE_TYPES:
            raise GraphpruneError(f"{source} was built with other features or edge types; rebuild it with "
                                  "`graphprune graph`")
        from torch_geometric.data import Data

        data = Data(x=stored["x"], edge_index=stored["edge_index"], edge_attr=stored["edge_attr"],
                    edge_type=stored["edge_type"], node_type=stored["node_type"])
        return cls(data, stored["group_sizes"], stored["group_roots"], stored["layer_names"],
                   stored["layer_types"], stored["top_k"], stored["build_seconds"])

    def save(self, path: str | Path) -> None:
        atomic_torch_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> NetworkGraph:
        """Load a saved graph; a missing, corrupt or foreign file is a GraphpruneError naming it."""
        return cls.from_dict(load_checkpoint(path), source=str(path))

    def summary(self) -> dict:
        """Plain-data description for graph.json: sizes by type, feature ranges, build settings."""
        x, edge_type, weight = self.data.x, self.data.edge_type, self.data.edge_attr[:, -1]
        edge_counts = torch.bincount(edge_type, minlength=len(EDGE_TYPES)).tolist()
        return {
            "nodes": {"channel": self.num_channel_nodes, "layer": self.num_layer_nodes,
                      "total": self.num_nodes},
            "groups": self.num_groups,
            "layers_by_type": dict(collections.Counter(self.layer_types)),
            "edges": dict(zip(EDGE_TYPES, edge_counts, strict=True)),
            "edges_total": int(edge_type.numel()),
            "edge_weight": _stats(weight),
            "features": {name: _stats(x[:, i]) for i, name in enumerate(self.feature_names)},
            "top_k": self.top_k,
            "build_seconds": round(self.build_seconds, 3),
        }


def _stats(values: Tensor) -> dict:
    if values.numel() == 0:
        return {"min": None, "max": None, "mean": None}
    values = values.double()
    return {"min": values.min().item(), "max": values.max().item(), "mean": values.mean().item()}


def build_graph(
    model: nn.Module, groups: ChannelGroups, cost: CostModel, calibration_batch: Tensor, top_k: int | None = TOP_K
) -> NetworkGraph:
    """Build the graph of `model` (weights and BN as they are now; the model is left unchanged).

    groups: the model's prunable channel groups (traced at `groups.input_shape`);
    cost: a `CostModel` of the same model and groups, for the cost-saved features;
    calibration_batch: [B, *groups.input_shape] inputs for the activation statistics (eval mode);
    top_k: channel_flow edges kept per target channel (the strongest weight slices); None keeps all.
    """
    start = time.perf_counter()
    if top_k is not None and top_k < 1:
        raise GraphpruneError(f"top_k must be at least 1 (or None for all edges), got {top_k}")
    if tuple(calibration_batch.shape[1:]) != groups.input_shape or calibration_batch.shape[0] < 1:
        raise GraphpruneError(f"calibration batch has shape {list(calibration_batch.shape)}; expected "
                              f"[batch, {', '.join(map(str, groups.input_shape))}]")
    layers = trace_layers(model, groups.input_shape)
    modules = dict(model.named_modules())
    channel_features = _channel_features(model, modules, groups, cost, calibration_batch)

    num_channels = sum(groups.sizes)
    layer_of_name = {name: i for i, name in enumerate(layers.names)}
    root_layers = torch.tensor([layer_of_name[g.root] for g in groups.groups], dtype=torch.long)
    channel_root_layer = torch.repeat_interleave(root_layers, torch.tensor(groups.sizes, dtype=torch.long))
    structure = layers.structure_features()  # [L, len(STRUCTURE_FEATURES)]
    channel_structure = structure[channel_root_layer].clone()
    channel_structure[:, :2] = torch.tensor([1.0, 0.0])  # node type one-hot: channel, not layer

    x = torch.zeros(num_channels + len(layers.names), len(FEATURE_NAMES))
    x[:num_channels, :len(STRUCTURE_FEATURES)] = channel_structure
    x[num_channels:, :len(STRUCTURE_FEATURES)] = structure
    x[:num_channels, len(STRUCTURE_FEATURES):DECIDED_COLUMN] = channel_features
    x[:num_channels, KEPT_COLUMN] = 1.0  # before any decision every channel is kept

    edges = [
        _with_reverse(layers.edges + num_channels, torch.ones(layers.edges.shape[1]), "layer_flow"),
        _with_reverse(*_channel_flow_edges(modules, groups, top_k), "channel_flow"),
        *_membership_edges(groups, layer_of_name, num_channels),
    ]
    edge_index = torch.cat([e[0] for e in edges], dim=1)
    weight = torch.cat([e[1] for e in edges])
    edge_type = torch.cat([e[2] for e in edges])
    edge_attr = torch.cat([nn.functional.one_hot(edge_type, len(EDGE_TYPES)).float(), weight[:, None]], dim=1)
    node_type = torch.cat([torch.full((num_channels,), CHANNEL_NODE),
                           torch.full((len(layers.names),), LAYER_NODE)])
    from torch_geometric.data import Data

    data = Data(x=x, edge_index=edge_index, edge_attr=edge_attr, edge_type=edge_type, node_type=node_type)
    return NetworkGraph(data, groups.sizes, groups.roots, layers.names, layers.types, top_k,
                        time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class LayerTrace:
    """The layers and operations of a traced network, in topological order.

    names, types: [L] (`types` from LAYER_TYPES); kernel, stride, groups, width, level: [L] (level = longest
    path from an input layer); edges: [2, E] layer indices of the data flow (views contracted).
    """

    names: list[str]
    types: list[str]
    kernel: Tensor
    stride: Tensor
    groups: Tensor
    width: Tensor
    level: Tensor
    edges: Tensor

    def structure_features(self) -> Tensor:
        """[L, len(STRUCTURE_FEATURES)] normalised structure features of the layer nodes."""
        type_index = torch.tensor([LAYER_TYPES.index(t) for t in self.types], dtype=torch.long)
        return torch.cat([
            torch.tensor([0.0, 1.0]).expand(len(self.names), 2),
            nn.functional.one_hot(type_index, len(LAYER_TYPES)).float(),
            torch.stack([
                _scaled_by_max(self.level),
                _scaled_by_max(self.kernel),
                _scaled_by_max(torch.log2(self.stride)),
                _scaled_by_max(torch.log2(self.groups)),
                _scaled_by_max(torch.log2(self.width)),
            ], dim=1),
        ], dim=1)


def trace_layers(model: nn.Module, input_shape: Sequence[int]) -> LayerTrace:
    """The layer nodes of the graph: every DependencyGraph node that carries activations.

    Dropped: pure views (reshape/flatten/expand: contracted, see _VIEW_TYPES) and ops computed from parameters
    only (e.g. the transpose of a Linear weight that autograd records): they transform weights, not data.
    An untraceable model raises `build_dependency_graph`'s GraphpruneError.
    """
    dependency_graph = build_dependency_graph(model, input_shape)
    module_names = {module: name for name, module in model.named_modules()}
    nodes = [n for n in dependency_graph.module2node.values() if _carries_data(n, module_names)]
    position = {node: i for i, node in enumerate(nodes)}
    successors = [[position[s] for s in _data_successors(node, position)] for node in nodes]

    order = _topological_order(successors)
    rank = {old: new for new, old in enumerate(order)}
    nodes = [nodes[i] for i in order]
    successors = [[rank[s] for s in successors[i]] for i in order]
    level = [0] * len(nodes)
    for i, targets in enumerate(successors):  # topological order: each level is final when reached
        for t in targets:
            level[t] = max(level[t], level[i] + 1)
    sources = [i for i, targets in enumerate(successors) for _ in targets]
    targets = [t for ts in successors for t in ts]

    shapes = [_layer_shape(node) for node in nodes]
    width = _propagate_widths(nodes, successors, [s[3] for s in shapes], input_shape[0])
    return LayerTrace(
        names=[_layer_name(node, module_names) for node in nodes],
        types=[_layer_type(node) for node in nodes],
        kernel=torch.tensor([s[0] for s in shapes], dtype=torch.float),
        stride=torch.tensor([s[1] for s in shapes], dtype=torch.float),
        groups=torch.tensor([s[2] for s in shapes], dtype=torch.float),
        width=torch.tensor(width, dtype=torch.float).clamp(min=1),
        level=torch.tensor(level, dtype=torch.float),
        edges=torch.tensor([sources, targets], dtype=torch.long).reshape(2, -1),
    )


def topological_group_order(roots: Sequence[str], layer_names: Sequence[str]) -> list[int]:
    """Group indices sorted by the position of their root layer in `layer_names` (topological, as traced);
    a root that is no traced layer goes last. The order in which `gat_ppo` and `amc` visit the groups."""
    position = {name: i for i, name in enumerate(layer_names)}
    return sorted(range(len(roots)), key=lambda g: position.get(roots[g], len(position)))


def _carries_data(node, module_names: dict) -> bool:
    if node.type in _VIEW_TYPES or node.type == tp.ops.OPTYPE.PARAMETER:
        return False
    if node.module in module_names:
        return True
    # A traced op fed only by parameters (AccumulateGrad leaves) never sees an activation.
    inputs = node.grad_fn.next_functions if node.grad_fn is not None else ()
    return not inputs or not all(type(f).__name__ == "AccumulateGrad" for f, _ in inputs if f is not None)


def _data_successors(node, kept: dict) -> list:
    """Outputs of `node` among the kept nodes, looking through contracted views; no duplicates."""
    found, pending, seen = [], list(node.outputs), set()
    while pending:
        nxt = pending.pop(0)
        if nxt in seen:
            continue
        seen.add(nxt)
        if nxt in kept:
            found.append(nxt)
        elif nxt.type in _VIEW_TYPES:
            pending.extend(nxt.outputs)
    return found


def _topological_order(successors: list[list[int]]) -> list[int]:
    indegree = [0] * len(successors)
    for targets in successors:
        for t in targets:
            indegree[t] += 1
    ready = collections.deque(i for i, d in enumerate(indegree) if d == 0)
    order = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for t in successors[i]:
            indegree[t] -= 1
            if indegree[t] == 0:
                ready.append(t)
    if len(order) != len(successors):
        raise RuntimeError("the traced data flow has a cycle")  # autograd graphs are acyclic: a bug
    return order


def _op_kind(node) -> str:
    """`relu`, `add`, `cat`, `maxpool2dwithindices`... from the autograd function that the op recorded."""
    if node.grad_fn is not None:
        return re.sub(r"backward\d*$", "", node.grad_fn.name().lower())
    return type(node.module).__name__.strip("_").lower()


def _layer_name(node, module_names: dict) -> str:
    if node.module in module_names:
        return module_names[node.module]
    # '#' never appears in module names; the DependencyGraph numbers its traced ops uniquely.
    return f"{_op_kind(node)}#{getattr(node.module, 'id', id(node.module))}"


def _layer_type(node) -> str:
    if node.type in _MODULE_LAYER_TYPES:
        return _MODULE_LAYER_TYPES[node.type]
    kind = _op_kind(node)
    if kind in ("add", "sub"):
        return "add"
    if "pool" in kind or kind == "mean":
        return "pool"
    if kind in _ACTIVATIONS:
        return "activation"
    return "other"


def _layer_shape(node) -> tuple[float, float, float, float | None]:
    """(kernel, stride, groups, output width or None when it must be inferred from the inputs)."""
    module = node.module
    if isinstance(module, nn.modules.conv._ConvNd):
        return max(module.kernel_size), max(module.stride), module.groups, module.out_channels
    if isinstance(module, nn.Linear):
        return 1, 1, 1, module.out_features
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return 1, 1, 1, module.num_features
    # Pools record their window in the autograd node; stride defaults to the kernel when not given.
    kernel = tuple(getattr(node.grad_fn, "_saved_kernel_size", ()) or ())
    stride = tuple(getattr(node.grad_fn, "_saved_stride", ()) or ()) or kernel
    return max(kernel, default=1), max(stride, default=1), 1, None


def _propagate_widths(nodes, successors, own: list, input_channels: int) -> list[float]:
    """Output width per layer: its own where known, else a concat sums its inputs, any other op keeps the
    widest input (elementwise ops and pools keep the channel count)."""
    inputs: list[list[int]] = [[] for _ in nodes]
    for i, targets in enumerate(successors):
        for t in targets:
            inputs[t].append(i)
    width: list[float] = []
    for i, node in enumerate(nodes):
        in_widths = [width[j] for j in inputs[i]]
        if own[i] is not None:
            width.append(float(own[i]))
        elif not in_widths:
            width.append(float(input_channels))
        elif node.type == tp.ops.OPTYPE.CONCAT:
            width.append(float(sum(in_widths)))
        else:
            width.append(float(max(in_widths)))
    return width


# --------------------------------------------------------------------------------------------- channels


def _channel_features(
    model: nn.Module, modules: dict, groups: ChannelGroups, cost: CostModel, calibration_batch: Tensor
) -> Tensor:
    """[C, len(CHANNEL_FEATURES)] features of every channel node, in node order."""
    roots = [_member(g, g.root, "out") for g in groups.groups]
    bns = [_first_batch_norm(group, modules) for group in groups.groups]
    stat_members = [bn or root for bn, root in zip(bns, roots, strict=True)]
    activations = _activation_statistics(model, modules, {m.module for m in stat_members}, calibration_batch)

    l1, l2, gamma, beta, has_bn, act_mean, act_std, l1_rank_group, l2_rank_group = ([] for _ in range(9))
    for group, root, bn, stat in zip(groups.groups, roots, bns, stat_members, strict=True):
        filters = modules[root.module].weight.detach().float().cpu()
        filters = filters.flatten(1) if filters.dim() > 1 else filters[:, None]
        l1.append(per_root_channel(root, filters.abs().mean(1), mean=True))
        l2.append(per_root_channel(root, filters.pow(2).mean(1), mean=True).sqrt())
        l1_rank_group.append(_rank01(l1[-1]))
        l2_rank_group.append(_rank01(l2[-1]))
        has_bn.append(torch.full((group.size,), float(bn is not None)))
        if bn is not None:
            gamma.append(per_root_channel(bn, modules[bn.module].weight.detach().float().cpu(), mean=True))
            beta.append(per_root_channel(bn, modules[bn.module].bias.detach().float().cpu(), mean=True))
        else:  # no affine normalisation: identity scale, zero shift
            gamma.append(torch.ones(group.size))
            beta.append(torch.zeros(group.size))
        channel_mean, channel_std = activations[stat.module]
        act_mean.append(per_root_channel(stat, channel_mean, mean=True))
        act_std.append(per_root_channel(stat, channel_std, mean=True))

    l1, l2 = torch.cat(l1), torch.cat(l2)
    return torch.stack([
        _scaled_by_max(l1), _scaled_by_max(l2),
        torch.cat(l1_rank_group), _rank01(l1), torch.cat(l2_rank_group), _rank01(l2),
        torch.cat(has_bn),
        _scaled_by_max(torch.cat(gamma)), _scaled_by_max(torch.cat(beta)),
        _scaled_by_max(torch.cat(act_mean)), _scaled_by_max(torch.cat(act_std)),
        *_cost_saved(groups, cost),
    ], dim=1)


def _first_batch_norm(group, modules: dict) -> GroupMember | None:
    """The group's first BatchNorm member that writes its channels (members in Torch-Pruning's order)."""
    return next((m for m in group.members if m.kind == "out" and isinstance(modules[m.module], _BATCH_NORMS)),
                None)


def _member(group, module: str, kind: str) -> GroupMember:
    return next(m for m in group.members if m.module == module and m.kind == kind)


def _rank01(values: Tensor) -> Tensor:
    """[n] -> rank in [0, 1] (1 = largest; a single value ranks 1)."""
    if values.numel() == 1:
        return torch.ones(1)
    ranks = torch.empty(values.numel())
    ranks[torch.argsort(values, stable=True)] = torch.arange(values.numel(), dtype=torch.float)
    return ranks / (values.numel() - 1)


def _scaled_by_max(values: Tensor) -> Tensor:
    """values / max |values| (all zeros stay zeros); keeps signs and relative sizes, bounds to [-1, 1]."""
    largest = values.abs().max() if values.numel() else torch.tensor(0.0)
    return values / largest if largest > 0 else torch.zeros_like(values)


def _activation_statistics(
    model: nn.Module, modules: dict, names: set[str], calibration_batch: Tensor
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-channel mean and std ([W] each) of the outputs of the named modules on the calibration batch."""
    statistics: dict[str, tuple[Tensor, Tensor]] = {}

    def record(name: str):
        def hook(module, _inputs, output):
            channel_dim = -1 if isinstance(module, nn.Linear) else 1
            per_channel = output.detach().float().movedim(channel_dim, 0).flatten(1)
            statistics[name] = (per_channel.mean(1).cpu(), per_channel.std(1, unbiased=False).cpu())
        return hook

    hooks = [modules[name].register_forward_hook(record(name)) for name in names]
    param = next(model.parameters())
    try:
        with evaluation_mode(model), torch.no_grad():
            model(calibration_batch.to(param.device, param.dtype))
    finally:
        for h in hooks:
            h.remove()
    missing = names - statistics.keys()
    if missing:
        raise RuntimeError(f"modules never ran on the calibration batch: {sorted(missing)}")
    return statistics


def _cost_saved(groups: ChannelGroups, cost: CostModel) -> list[Tensor]:
    """[C] per graph-feature metric (budget.METRICS): the share of it that removing one channel saves."""
    saved = []
    for name, metric in METRICS.items():
        if not metric.graph_feature:
            continue
        per_group = []
        for group in groups.groups:
            counts = list(groups.sizes)
            counts[group.index] -= 1
            full = cost.full_amount(name)
            per_group.append(torch.full((group.size,), (full - cost.amount(name, counts)) / full))
        saved.append(torch.cat(per_group).float())
    return saved


# ------------------------------------------------------------------------------------------------ edges


def _channel_flow_edges(modules: dict, groups: ChannelGroups, top_k: int | None) -> tuple[Tensor, Tensor]:
    """Input channel -> output channel edges through every conv/linear reading one group and writing another.

    Weight of (i of g) -> (j of h): the L2 norm of the weight slice W[j's rows, i's columns] (kernel
    included), divided by the largest such norm of the same layer so that layers of different scale compare.
    Only the `top_k` strongest incoming edges of each target channel are kept (over all its layers).
    Depthwise convs are skipped: they connect a channel only to itself. Returns edge_index [2, E], weight [E].
    """
    offsets = [0]
    for size in groups.sizes:
        offsets.append(offsets[-1] + size)
    writers: dict[str, list[tuple[int, GroupMember]]] = collections.defaultdict(list)
    readers: dict[str, list[tuple[int, GroupMember]]] = collections.defaultdict(list)
    for group in groups.groups:
        for member in group.members:
            (writers if member.kind == "out" else readers)[member.module].append((group.index, member))

    sources, targets, weights = [], [], []
    for name in writers.keys() & readers.keys():
        module = modules[name]
        if not isinstance(module, nn.Linear | nn.modules.conv._ConvNd) or getattr(module, "groups", 1) != 1:
            continue
        weight = module.weight.detach().float().cpu()
        squared = weight.pow(2).flatten(2).sum(2) if weight.dim() > 2 else weight.pow(2)  # [out, in]
        row_nodes, row_index, row_owner = _channel_nodes_of(writers[name], offsets)
        col_nodes, col_index, col_owner = _channel_nodes_of(readers[name], offsets)
        # Sum the squared entries of each (root channel j, root channel i) slice: [rows, in], [rows, cols].
        by_row = _sum_into_owners(squared, 0, row_index, row_owner, len(row_nodes))
        by_slice = _sum_into_owners(by_row, 1, col_index, col_owner, len(col_nodes))
        norms = by_slice.sqrt()
        largest = float(norms.max())
        norms = norms / largest if largest > 0 else norms
        # Per-layer pre-selection keeps memory small; the global cut per target follows below.
        k = norms.shape[1] if top_k is None else min(top_k, norms.shape[1])
        values, columns = torch.topk(norms, k, dim=1)
        sources.append(col_nodes[columns].flatten())
        targets.append(row_nodes[:, None].expand(-1, k).flatten())
        weights.append(values.flatten())
    if not sources:
        return torch.zeros(2, 0, dtype=torch.long), torch.zeros(0)
    edge_index = torch.stack([torch.cat(sources), torch.cat(targets)])
    from torch_geometric.utils import coalesce

    edge_index, weight = coalesce(edge_index, torch.cat(weights), reduce="max")
    not_loop = edge_index[0] != edge_index[1]
    return _top_k_per_target(edge_index[:, not_loop], weight[not_loop], top_k)


def _channel_nodes_of(
    members: list[tuple[int, GroupMember]], offsets: list[int]
) -> tuple[Tensor, Tensor, Tensor]:
    """The channel nodes that members of one module cover, and how the module's channels map onto them.

    Returns nodes [R] (global node ids), index [M] (module channel) and owner [M] (position in `nodes`).
    """
    nodes, indices, owners, covered = [], [], [], 0
    for group, member in members:
        index, owner = member_channels(member)
        nodes.append(torch.arange(len(member.channels)) + offsets[group])
        indices.append(index)
        owners.append(owner + covered)
        covered += len(member.channels)
    return torch.cat(nodes), torch.cat(indices), torch.cat(owners)


def _sum_into_owners(values: Tensor, dim: int, index: Tensor, owner: Tensor, size: int) -> Tensor:
    """Sum the slices `values[index]` along `dim` into `size` owners (`owner[m]` receives `index[m]`)."""
    picked = values.index_select(dim, index)
    if torch.equal(owner, torch.arange(size)):  # one module channel per root channel: a plain gather
        return picked
    shape = list(values.shape)
    shape[dim] = size
    return torch.zeros(shape).index_add_(dim, owner, picked)


def _top_k_per_target(edge_index: Tensor, weight: Tensor, top_k: int | None) -> tuple[Tensor, Tensor]:
    """Keep the `top_k` heaviest edges into each target node. edge_index: [2, E], weight: [E]."""
    if top_k is None or weight.numel() == 0:
        return edge_index, weight
    order = torch.argsort(weight, descending=True, stable=True)
    order = order[torch.argsort(edge_index[1, order], stable=True)]  # by target, heaviest first within
    target = edge_index[1, order]
    counts = torch.bincount(target)
    first_of_target = torch.cumsum(counts, 0) - counts
    keep = order[torch.arange(target.numel()) - first_of_target[target] < top_k]
    return edge_index[:, keep], weight[keep]


def _membership_edges(groups: ChannelGroups, layer_of_name: dict, num_channels: int):
    """Channel <-> layer edges for every member of every group, typed by out/in member, both directions."""
    by_kind: dict[str, list[Tensor]] = {"out": [], "in": []}
    offset = 0
    for group in groups.groups:
        channels = torch.arange(offset, offset + group.size)
        for member in group.members:
            layer = torch.full((group.size,), num_channels + layer_of_name[member.module])
            by_kind[member.kind].append(torch.stack([channels, layer]))
        offset += group.size
    for kind, name in (("out", "channel_to_out_layer"), ("in", "channel_to_in_layer")):
        edge_index = torch.cat(by_kind[kind], dim=1) if by_kind[kind] else torch.zeros(2, 0, dtype=torch.long)
        yield _with_reverse(edge_index, torch.ones(edge_index.shape[1]), name)


def _with_reverse(edge_index: Tensor, weight: Tensor, forward_type: str) -> tuple[Tensor, Tensor, Tensor]:
    """Forward edges then their reverses, which have the type listed right after `forward_type`.

    edge_index: [2, E], weight: [E] -> edge_index [2, 2E], weight [2E], edge_type [2E].
    """
    forward = EDGE_TYPES.index(forward_type)
    count = edge_index.shape[1]
    edge_type = torch.cat([torch.full((count,), forward), torch.full((count,), forward + 1)])
    return torch.cat([edge_index, edge_index.flip(0)], dim=1), torch.cat([weight, weight]), edge_type
