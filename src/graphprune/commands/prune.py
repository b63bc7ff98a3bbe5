"""`graphprune prune`: prune any model (zoo, torchvision, or a baseline checkpoint) with any method to a FLOPs,
parameter or latency budget, optionally fine-tune it, and write the result. This module parses the options and
prints; the work is `graphprune.prune_job`'s (and `graphprune.api`'s).

Writes to --out: model.pt (spec + mask + pruned state dict, see `pruning.save_pruned`), mask.pt, model.onnx
(with --onnx) and metrics.json (cost, search accuracy, measured latency, masked-vs-pruned agreement), metrics.json
last. Search methods need --data (a dataset name or imagefolder:DIR); their log and checkpoint go to
--out/search/, so an interrupted search resumes. The test split of a named dataset is never read.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from graphprune.commands.common import apply_threads
from graphprune.errors import GraphpruneError
from graphprune.methods.index import DEFAULT_EVALUATIONS, available_methods


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
    # torch and the API load when the command runs, not for `graphprune --help`
    from graphprune.prune_job import PruneJob, run_prune_job

    apply_threads(args)
    parsed = {"settings": _json_settings(args.settings), "latency_batch_sizes": _batch_sizes(args.latency_batch_sizes)}
    job = PruneJob(**{f.name: parsed.get(f.name, getattr(args, f.name)) for f in fields(PruneJob)})
    spec, result = run_prune_job(job)
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


def _json_settings(text: str) -> dict:
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphpruneError(f"--settings must be a JSON object, got {text!r} ({exc})") from exc
    if not isinstance(settings, dict):
        raise GraphpruneError(f"--settings must be a JSON object, got {text!r}")
    return settings


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError as exc:
        raise GraphpruneError(f"--latency-batch-sizes must be comma-separated integers, got {text!r}") from exc
    if not sizes or min(sizes) < 1:
        raise GraphpruneError(f"--latency-batch-sizes must be positive, got {text!r}")
    return sizes
