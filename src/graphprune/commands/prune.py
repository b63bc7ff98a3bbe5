"""`graphprune prune`: one-shot pruning of any model (zoo, torchvision, or a baseline checkpoint) with a method
that needs no search data, to a FLOPs or parameter budget.

Writes to --out: model.pt (spec + mask + pruned state dict, see `pruning.save_pruned`), mask.pt, model.onnx
(with --onnx) and metrics.json (cost, measured latency, masked-vs-pruned agreement), metrics.json last.
This command does not train, fine-tune or read datasets.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from graphprune.checkpoint import atomic_write_json, load_model
from graphprune.cost import CostModel, measure_latency, parse_target
from graphprune.errors import GraphpruneError
from graphprune.methods import MethodContext, get_method
from graphprune.models import ModelSpec, available_models, build_model
from graphprune.pruning import (
    ChannelGroups,
    ChannelMasker,
    Mask,
    export_onnx,
    prune_model,
    save_mask,
    save_pruned,
)

log = logging.getLogger(__name__)

# Samples of the random batch on which the masked and the pruned network must agree.
AGREEMENT_BATCH = 8


@dataclass(frozen=True)
class PruneRequest:
    """How to prune and where to write the result (`checkpoint`: where the weights came from, if anywhere)."""

    checkpoint: Path | None
    method: str
    target: str
    min_channels: int
    seed: int
    out_dir: Path
    onnx: bool
    latency_batch_sizes: tuple[int, ...]
    latency_repeats: int


@dataclass(frozen=True)
class PruneMetrics:
    """metrics.json of `graphprune prune`. FLOPs are MACs of one sample's forward pass (Torch-Pruning's count);
    ratios are pruned / unpruned; `latency` maps each batch size to median seconds of both nets and their
    ratio, measured side by side on the CPU in one run; `max_abs_diff_masked_vs_pruned` is over a random batch
    in eval mode."""

    model: str
    checkpoint: str | None
    method: str
    target: str
    seed: int
    min_channels: int
    groups: int
    channels: int
    channels_kept: int
    flops: int
    params: int
    full_flops: int
    full_params: int
    flops_ratio: float
    params_ratio: float
    latency_ratio: float  # at the smallest batch size measured (batch 1 by default)
    latency: dict[str, dict[str, float]]
    max_abs_diff_masked_vs_pruned: float
    onnx_exporter: str | None
    search: dict
    seconds: float


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prune", help="prune a model one-shot with a heuristic to a FLOPs/params budget",
        description="Prune a model one-shot (no search data) and write model.pt, mask.pt, metrics.json.",
    )
    parser.add_argument("--model", help=f"model name: {', '.join(available_models())} "
                                         "(optional with --checkpoint, which names its architecture)")
    parser.add_argument("--checkpoint", type=Path, help="baseline model.pt to prune (default: fresh weights)")
    parser.add_argument("--dataset-shape", help="input shape C,H,W of one sample (H = W), e.g. 3,32,32")
    parser.add_argument("--input-size", type=int, help="input height = width (default 32)")
    parser.add_argument("--in-channels", type=int, help="input channels (default 3)")
    parser.add_argument("--num-classes", type=int, help="classes (default 10)")
    parser.add_argument("--method", required=True,
                        help="a method that needs no search data: random, l1_uniform, global_bn, depgraph")
    parser.add_argument("--target", required=True, help="budget, e.g. flops0.5 (keep <= 50%% of FLOPs) or params0.3")
    parser.add_argument("--min-channels", type=int, default=1, help="channels every group keeps (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random choices (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--onnx", action="store_true", help="also export the pruned network to model.onnx")
    parser.add_argument("--latency-batch-sizes", default="1,64",
                        help="batch sizes to time, comma-separated (default %(default)s)")
    parser.add_argument("--latency-repeats", type=int, default=20, help="timed runs per batch size (default 20)")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    model, spec = _model_from_args(args)
    request = PruneRequest(
        checkpoint=args.checkpoint, method=args.method, target=args.target, min_channels=args.min_channels,
        seed=args.seed, out_dir=args.out, onnx=args.onnx,
        latency_batch_sizes=_batch_sizes(args.latency_batch_sizes), latency_repeats=args.latency_repeats,
    )
    metrics = prune(model, spec, request)
    latency = ", ".join(f"batch {b}: {v['ratio']:.2f}" for b, v in metrics.latency.items())
    print(f"{metrics.model} {metrics.method} {metrics.target}: {metrics.flops_ratio:.3f} of FLOPs, "
          f"{metrics.params_ratio:.3f} of params, latency ratio {latency} -> {args.out}")
    return 0


def _model_from_args(args: argparse.Namespace) -> tuple[nn.Module, ModelSpec]:
    """The model the flags describe; with --checkpoint, its stored model, which the flags must not contradict."""
    shape = {"in_channels": args.in_channels, "input_size": args.input_size, "num_classes": args.num_classes}
    if args.dataset_shape:
        channels, height, _width = _shape(args.dataset_shape)
        for key, value in (("in_channels", channels), ("input_size", height)):
            if shape[key] is not None and shape[key] != value:
                raise GraphpruneError(f"--dataset-shape {args.dataset_shape} contradicts --{key.replace('_', '-')}")
            shape[key] = value
    given = {key: value for key, value in shape.items() if value is not None}
    if args.checkpoint is None:
        if not args.model:
            raise GraphpruneError("give --model (a zoo or torchvision:<name> model) or --checkpoint")
        log.warning("no --checkpoint: pruning freshly initialised weights of %s", args.model)
        spec = ModelSpec(args.model, **given)
        return build_model(spec), spec
    stored = load_model(args.checkpoint)
    wanted = {"name": args.model, **given} if args.model else given
    clashes = [f"{key}={value} (checkpoint: {getattr(stored.spec, key)})" for key, value in wanted.items()
               if getattr(stored.spec, key) != value]
    if clashes:
        raise GraphpruneError(f"{args.checkpoint} holds {stored.spec.name} for another setting: "
                              f"{', '.join(clashes)}; drop the flags or pick the matching checkpoint")
    return stored.model, stored.spec


def _shape(text: str) -> tuple[int, int, int]:
    try:
        channels, height, width = (int(part) for part in text.split(","))
    except ValueError as exc:
        raise GraphpruneError(f"--dataset-shape must be C,H,W (three integers), got {text!r}") from exc
    if height != width or min(channels, height) < 1:
        raise GraphpruneError(f"--dataset-shape {text}: the models take square inputs (H = W) of positive size")
    return channels, height, width


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError as exc:
        raise GraphpruneError(f"--latency-batch-sizes must be comma-separated integers, got {text!r}") from exc
    if not sizes or min(sizes) < 1:
        raise GraphpruneError(f"--latency-batch-sizes must be positive, got {text!r}")
    return sizes


def prune(model: nn.Module, spec: ModelSpec, request: PruneRequest) -> PruneMetrics:
    """Prune `model` (built from `spec`; left unchanged) one-shot as `request` says and write its files;
    returns the metrics written to metrics.json."""
    start = time.perf_counter()
    budget = parse_target(request.target)
    method = get_method(request.method)  # before any tracing: a misspelt name fails at once
    model.eval()
    groups = ChannelGroups(model, spec.input_shape, request.min_channels)
    cost = CostModel(model, groups)
    context = MethodContext(model, groups, cost, seed=request.seed, out_dir=request.out_dir)
    result = method.search(context, budget)
    mask = result.mask
    pruned = prune_model(model, groups, mask).eval()
    max_diff = masked_vs_pruned_difference(model, pruned, groups, mask, request.seed)
    latency = measure_latency(pruned, model, spec.input_shape, request.latency_batch_sizes,
                              repeats=request.latency_repeats)

    out = request.out_dir
    out.mkdir(parents=True, exist_ok=True)
    save_mask(out / "mask.pt", mask, groups)
    meta = {"method": request.method, "target": request.target, "seed": request.seed,
            "checkpoint": str(request.checkpoint) if request.checkpoint else None, "search": result.record}
    save_pruned(out / "model.pt", spec, mask, pruned, meta, groups)
    exporter = export_onnx(pruned, spec.input_shape, out / "model.onnx") if request.onnx else None
    flops, params = cost.of_mask(mask)
    metrics = PruneMetrics(
        model=spec.name, checkpoint=meta["checkpoint"], method=request.method, target=str(budget),
        seed=request.seed, min_channels=request.min_channels, groups=len(groups), channels=sum(groups.sizes),
        channels_kept=sum(mask.counts), flops=flops, params=params, full_flops=cost.full_flops,
        full_params=cost.full_params, flops_ratio=flops / cost.full_flops, params_ratio=params / cost.full_params,
        latency_ratio=latency[min(latency)]["ratio"], latency={str(b): v for b, v in latency.items()},
        max_abs_diff_masked_vs_pruned=max_diff, onnx_exporter=exporter, search=result.record,
        seconds=time.perf_counter() - start,
    )
    atomic_write_json(asdict(metrics), out / "metrics.json")
    return metrics


def masked_vs_pruned_difference(model: nn.Module, pruned: nn.Module, groups: ChannelGroups, mask: Mask,
                                seed: int) -> float:
    """Largest |masked(x) - pruned(x)| over a random batch in eval mode: 0 up to float rounding when pruning
    is exact."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(AGREEMENT_BATCH, *groups.input_shape, generator=generator)
    with torch.no_grad():
        with ChannelMasker(model, groups, mask):
            masked = model(x)
        return float((masked - pruned(x)).abs().max())
