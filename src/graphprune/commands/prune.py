"""`graphprune prune`: prune any model (zoo, torchvision, or a baseline checkpoint) with any method to a FLOPs or
parameter budget, optionally fine-tune it, and write the result. The work is `graphprune.api`'s; this module
parses arguments, builds the model and data they name, and writes the files.

Writes to --out: model.pt (spec + mask + pruned state dict, see `pruning.save_pruned`), mask.pt, model.onnx
(with --onnx) and metrics.json (cost, search accuracy, measured latency, masked-vs-pruned agreement), metrics.json
last. Search methods need --data (a dataset name or imagefolder:DIR); their log and checkpoint go to
--out/search/, so an interrupted search resumes. The test split of a named dataset is never read.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from graphprune.commands.common import apply_threads
from graphprune.errors import GraphpruneError
from graphprune.methods.index import DEFAULT_EVALUATIONS, available_methods

if TYPE_CHECKING:  # torch and the API load when the command runs, not for `graphprune --help`
    from torch import nn

    from graphprune import api
    from graphprune.models.spec import ModelSpec

IMAGE_FOLDER_PREFIX = "imagefolder:"  # as graphprune.api.IMAGE_FOLDER_PREFIX
CHECKPOINT_FORMATS = ("--checkpoint takes a graphprune model.pt or a plain state dict saved with "
                      "torch.save(model.state_dict(), path); pickled modules are never loaded")

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prune", help="prune a model with any method to a FLOPs, params or latency budget (optionally fine-tune it)",
        description="Prune a model and write model.pt, mask.pt, metrics.json. Search methods need --data.",
    )
    parser.add_argument("--model", help="a zoo model (resnet20, resnet56, vgg16_bn, mobilenetv2, ...) or "
                                         "torchvision:<name> (optional with --checkpoint, which names its architecture)")
    parser.add_argument("--checkpoint", type=Path,
                        help="your trained weights: a state dict (torch.save(model.state_dict(), path)) for --model, "
                             "or a graphprune model.pt, which names its architecture (default: fresh weights "
                             "seeded by --seed)")
    parser.add_argument("--dataset-shape", help="input shape C,H,W of one sample (H = W), e.g. 3,32,32")
    parser.add_argument("--input-size", type=int, help="input height = width (default 32, or --data's)")
    parser.add_argument("--in-channels", type=int, help="input channels (default 3, or --data's)")
    parser.add_argument("--num-classes", type=int, help="classes (default 10, or --data's)")
    parser.add_argument("--method", required=True, help=f"pruning method: {', '.join(available_methods())}")
    parser.add_argument("--target", required=True, help="budget, e.g. flops0.5 (keep <= 50%% of FLOPs), params0.3 or "
                                                        "latency0.6 (of the latency at --budget-batch-size on --device)")
    parser.add_argument("--data", help="images for search methods and fine-tuning: a dataset name (digits, "
                                       "fashion_mnist, cifar10, ...) or imagefolder:DIR (DIR/<class>/<image>)")
    parser.add_argument("--data-root", default="data", help="where named datasets live (default %(default)s)")
    parser.add_argument("--search-size", type=float, default=0.1,
                        help="imagefolder: share (<1) or number of images held out for the search (default 0.1)")
    parser.add_argument("--search-images", type=int, help="search images scored per mask (default: all)")
    parser.add_argument("--evaluations", type=int, default=DEFAULT_EVALUATIONS,
                        help="distinct masks a search method may score (default %(default)s)")
    parser.add_argument("--settings", default="{}", help='the method\'s settings as JSON, e.g. \'{"amc_warmup": 8}\'')
    parser.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune the pruned network (needs --data)")
    parser.add_argument("--finetune-lr", type=float, help="fine-tuning learning rate (default: the config default)")
    parser.add_argument("--min-channels", type=int, default=1, help="channels every group keeps (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random choices (default 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="default %(default)s")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--onnx", action="store_true", help="also export the pruned network to model.onnx")
    parser.add_argument("--budget-batch-size", type=int, default=1,
                        help="latency<ratio> targets: the batch size whose latency is budgeted (default 1)")
    parser.add_argument("--latency-cache", help="folder of latency tables (default ~/.cache/graphprune/latency)")
    parser.add_argument("--latency-batch-sizes", default="1,64",
                        help="batch sizes to time, comma-separated (default %(default)s)")
    parser.add_argument("--latency-repeats", type=int, default=20, help="timed runs per batch size (default 20)")
    parser.add_argument("--latency-threads", type=int, default=1,
                        help="torch threads the latency is timed with, apart from --threads (default %(default)s)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep the resumable fine-tuning state (finetune/last.pt) after a successful run")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    existed = args.out.exists()
    try:
        return _prune(args)
    except GraphpruneError:
        _remove_empty_folders(args.out, keep_root=existed)  # a refused run leaves nothing behind
        raise


def _remove_empty_folders(root: Path, keep_root: bool) -> None:
    """Remove the empty folders under `root` (deepest first), and `root` itself when empty and not `keep_root`;
    files, such as a search checkpoint to resume from, are never touched."""
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not keep_root and not any(root.iterdir()):
        root.rmdir()


def _prune(args: argparse.Namespace) -> int:
    from graphprune import api
    from graphprune.methods import get_method
    from graphprune.network.cost import parse_target

    apply_threads(args)
    # Everything a user can get wrong is checked before any loading, tracing or writing.
    settings = _json_settings(args.settings)
    parse_target(args.target)
    get_method(args.method).parse_settings(settings)
    if args.finetune_epochs and not args.data:
        raise GraphpruneError("--finetune-epochs needs --data (the images to fine-tune on)")
    if args.latency_threads < 1:
        raise GraphpruneError(f"--latency-threads must be at least 1, got {args.latency_threads}")
    spec, stored = _spec_from_args(args)
    data = api.load_data(args.data, spec.in_channels, spec.input_size, num_classes=spec.num_classes,
                         search_size=args.search_size, seed=args.seed, root=args.data_root) if args.data else None
    model = _model(spec, stored, args)
    result = api.prune(
        model, _example_inputs(spec), args.target, args.method, data, settings=settings,
        evaluations=args.evaluations, seed=args.seed, min_channels=args.min_channels,
        search_images=args.search_images, device=args.device, work_dir=args.out / "search",
        latency_batch_sizes=_batch_sizes(args.latency_batch_sizes), latency_repeats=args.latency_repeats,
        latency_threads=args.latency_threads, spec=spec,
        latency={"batch_size": args.budget_batch_size, "device": "cuda" if args.device == "cuda" else "cpu",
                 "cache_dir": args.latency_cache},
    )
    if args.finetune_epochs:
        recipe = {"lr": args.finetune_lr} if args.finetune_lr is not None else {}
        api.finetune(result, epochs=args.finetune_epochs, seed=args.seed, device=args.device,
                     run_dir=args.out / "finetune", **recipe)
    write_outputs(result, args.out, checkpoint=args.checkpoint, onnx=args.onnx)
    if not args.keep_checkpoints:  # the resumable fine-tuning state is spent once model.pt is written
        from graphprune.paths import training_checkpoint

        Path(training_checkpoint(str(args.out / "finetune"))).unlink(missing_ok=True)
    m = result.metrics
    latency = ", ".join(f"batch {b}: {v['ratio']:.2f}" for b, v in m.latency.items())
    accuracy = "" if m.search_top1 is None else f", search top-1 {m.search_top1:.4f}"
    if m.search_top1_finetuned is not None:
        accuracy += f" ({m.search_top1_finetuned:.4f} fine-tuned)"
    if m.predicted_latency_ratio is not None:
        accuracy += f", predicted latency ratio {m.predicted_latency_ratio:.3f}"
    print(f"{spec.name} {m.method} {m.target}: {m.flops_ratio:.3f} of FLOPs, {m.params_ratio:.3f} of params"
          f"{accuracy}, latency ratio {latency or 'not measured'} ({m.latency_threads} thread(s)) -> {args.out}")
    return 0


def write_outputs(result: api.PruneResult, out: Path, *, checkpoint: Path | None, onnx: bool) -> None:
    """model.pt, mask.pt, optional model.onnx, then metrics.json (last: its presence means the rest is there)."""
    from graphprune import api
    from graphprune.checkpoint import atomic_write_json
    from graphprune.network.pruning import export_onnx, save_mask

    out.mkdir(parents=True, exist_ok=True)
    api.save(result, out / "model.pt")
    save_mask(out / "mask.pt", result.mask, result.groups)
    exporter = export_onnx(result.model, result.groups.input_shape, out / "model.onnx") if onnx else None
    m = result.metrics
    latency_ratio = m.latency[min(m.latency, key=int)]["ratio"] if m.latency else None
    atomic_write_json({
        "model": result.spec.name if result.spec else None, "checkpoint": str(checkpoint) if checkpoint else None,
        **m.to_dict(), "latency_ratio": latency_ratio, "onnx_exporter": exporter, "search": result.record,
    }, out / "metrics.json")


def _json_settings(text: str) -> dict:
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphpruneError(f"--settings must be a JSON object, got {text!r} ({exc})") from exc
    if not isinstance(settings, dict):
        raise GraphpruneError(f"--settings must be a JSON object, got {text!r}")
    return settings


def _example_inputs(spec: ModelSpec):
    import torch

    return torch.zeros(2, *spec.input_shape)


def _spec_from_args(args: argparse.Namespace) -> tuple[ModelSpec, dict | None]:
    """The architecture the flags describe, and the loaded --checkpoint (None without one). A graphprune
    model file names its architecture, which the flags must not contradict; a plain state dict needs --model."""
    from graphprune.checkpoint import is_model_file, load_checkpoint
    from graphprune.models import ModelSpec

    shape = {"in_channels": args.in_channels, "input_size": args.input_size, "num_classes": args.num_classes}
    if args.dataset_shape:
        channels, height, _width = _shape(args.dataset_shape)
        for key, value in (("in_channels", channels), ("input_size", height)):
            if shape[key] is not None and shape[key] != value:
                raise GraphpruneError(f"--dataset-shape {args.dataset_shape} contradicts --{key.replace('_', '-')}")
            shape[key] = value
    stored = None
    if args.checkpoint is not None:
        stored = load_checkpoint(args.checkpoint, remedy=CHECKPOINT_FORMATS)
    if args.data and not args.data.startswith(IMAGE_FOLDER_PREFIX) and not (stored and is_model_file(stored)):
        for key, value in asdict(_dataset_info(args.data)).items():  # a named dataset fixes the shape
            if key in shape and shape[key] is None:
                shape[key] = value
    given = {key: value for key, value in shape.items() if value is not None}
    if stored is not None and is_model_file(stored):
        spec = ModelSpec.from_dict(stored["arch"])
        wanted = {"name": args.model, **given} if args.model else given
        clashes = [f"{key}={value} (checkpoint: {getattr(spec, key)})" for key, value in wanted.items()
                   if getattr(spec, key) != value]
        if clashes:
            raise GraphpruneError(f"{args.checkpoint} holds {spec.name} for another setting: "
                                  f"{', '.join(clashes)}; drop the flags or pick the matching checkpoint")
        return spec, stored
    if not args.model:
        raise GraphpruneError("give --model (a zoo or torchvision:<name> model): --checkpoint " + (
            "holds weights without an architecture" if stored is not None else "is not given either"))
    return ModelSpec(args.model, **given), stored


def _model(spec: ModelSpec, stored: dict | None, args: argparse.Namespace) -> nn.Module:
    """The network to prune: built from `spec`, with the --checkpoint's weights, or fresh weights drawn under
    --seed (the same command gives the same network, and so the same result)."""
    import torch

    from graphprune.checkpoint import is_model_file, load_state_dict_into
    from graphprune.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = build_model(spec)
    if stored is None:
        log.warning("no --checkpoint: pruning an UNTRAINED %s (fresh weights seeded by --seed %d); its accuracies "
                    "mean little. Give your trained weights with --checkpoint (README: prune your own network)",
                    spec.name, args.seed)
        return model
    weights = stored["state_dict"] if is_model_file(stored) else stored
    return load_state_dict_into(model, weights, f"--checkpoint {args.checkpoint}")


def _dataset_info(name: str):
    from graphprune.config import dataset_settings
    from graphprune.data.datasets import dataset_info

    return dataset_info(dataset_settings({"name": name}, source=f"--data {name}"))


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
