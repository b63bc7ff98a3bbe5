"""The resources a budget can bound, in one table, and budgets themselves (`flops0.5`, `latency0.6`).

Adding a metric: one entry in `METRICS`, whose `price` names the function that prices it (`module:function`,
`(cost_model, counts) -> float`, in the metric's own file; imported on first use). The target parser, the
config check, `CostModel` (amounts and ratios), the search records (`<name>_ratio`) and the graph's cost
features (`<name>_saved`, where `graph_feature`) read this table. Torch-free: the config code checks targets
with it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from graphprune.errors import GraphpruneError


@dataclass(frozen=True)
class ResourceMetric:
    """One resource: `name` as written in targets, `label` in tables and messages, what it measures;
    `graph_feature`: the network graph carries the share of it that one channel of each group costs
    (analytic metrics only: a graph must not depend on the machine it was built on); `measured`: priced
    from timings on a device (a latency table), so a search needs that table; `price`: "module:function" of
    its price, `(CostModel, counts [G] int64) -> float` in the metric's own unit."""

    name: str
    label: str
    description: str
    graph_feature: bool
    measured: bool
    price: str

    @property
    def column(self) -> str:
        """The column of search records and reports: the pruned network's share of it."""
        return f"{self.name}_ratio"


METRICS: dict[str, ResourceMetric] = {metric.name: metric for metric in (
    ResourceMetric("flops", "FLOPs", "multiply-accumulates of one sample's forward pass", True, False,
                   "graphprune.network.cost:flops_price"),
    ResourceMetric("params", "params", "parameters of the network", True, False,
                   "graphprune.network.cost:params_price"),
    ResourceMetric("latency", "latency", "forward time of a batch on a device, predicted from per-layer "
                   "timing tables (graphprune.network.latency)", False, True, "graphprune.network.cost:latency_price"),
)}

_RATIO_FORM = r"(\d+(?:\.\d*)?|\.\d+)"


@dataclass(frozen=True)
class Budget:
    """Keep at most `ratio` of the unpruned network's `metric` (a name in METRICS), ratio in (0, 1]."""

    metric: str
    ratio: float

    def __post_init__(self):
        if self.metric not in METRICS or not (0.0 < self.ratio <= 1.0):
            raise GraphpruneError(
                f"invalid budget {self.metric!r} {self.ratio!r}: the metric must be one of {', '.join(METRICS)} "
                "and the ratio in (0, 1]"
            )

    def __str__(self) -> str:
        return f"{self.metric}{self.ratio:g}"


def parse_target(target: str) -> Budget:
    """Parse a target name such as `flops0.5` (keep at most 50% of FLOPs), `params0.3` or `latency0.6`."""
    match = re.fullmatch(f"({'|'.join(map(re.escape, METRICS))}){_RATIO_FORM}", target.strip())  # METRICS as now
    ratio = float(match.group(2)) if match else math.nan
    if not (0.0 < ratio <= 1.0):
        raise GraphpruneError(
            f"malformed budget target {target!r}: write <metric><ratio> with a metric of "
            f"{', '.join(METRICS)} and the ratio in (0, 1], e.g. flops0.5, params0.3 or latency0.6"
        )
    return Budget(match.group(1), ratio)
