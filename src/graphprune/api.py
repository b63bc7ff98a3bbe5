"""Prune your own network from Python: the few calls a user needs, re-exported at the package top level.

    import graphprune
    data = graphprune.PruneData.split(train_set, search_size=0.1)    # never the test set
    result = graphprune.prune(model, example_inputs, target="flops0.5", method="gat_ppo", data=data)
    result.model                                  # the physically pruned nn.Module; result.metrics, result.mask
    graphprune.finetune(result, epochs=2)         # the project's training loop, on data.train
    graphprune.save(result, "pruned.pt")          # weights + mask: no pickled module
    pruned = graphprune.load("pruned.pt", model=MyNet())   # an unpruned instance to replay the mask on

Any registered method works (`graphprune.methods.available_methods()`); the one-shot heuristics need no data.
The search methods score candidate masks on `data.search` (BN statistics recalibrated on `data.train` per
mask, as in the pipeline); gat_ppo also reads the network graph, built here from `data.train`. Every user
mistake raises `GraphpruneError`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from graphprune.config import dataset_settings, finetune_recipe, search_settings, stable_hash
from graphprune.data.splits import dataset_info, hold_out, image_folder, load_splits, search_count
from graphprune.errors import GraphpruneError
from graphprune.methods.base import DEFAULT_EVALUATIONS
from graphprune.models import ModelSpec
from graphprune.network.evaluate import evaluation_mode
from graphprune.network.latency import measure_latency, torch_threads
from graphprune.network.pruning import (
    ChannelGroups,
    Mask,
    PrunedModel,
    load_pruned,
    masked_vs_pruned_difference,
    prune_model,
    save_pruned,
)
from graphprune.search_setup import ImageDraw, build_search, graph_from_training_images, parse_request
from graphprune.train import TrainRecipe, resolve_device, train

log = logging.getLogger(__name__)

IMAGE_FOLDER_PREFIX = "imagefolder:"  # --data imagefolder:DIR (your own images)


@dataclass(frozen=True)
class PruneData:
    """The user's images for a search: `train` (BN recalibration of each candidate, the graph's activation
    statistics, fine-tuning) and `search` (held out of train: the accuracy a search maximises). Datasets
    yield `(image tensor [C, H, W], label)`; a DataLoader stands for its dataset. Never pass the test set."""

    train: Dataset
    search: Dataset

    @classmethod
    def split(cls, dataset: Dataset | DataLoader, search_size: float = 0.1, seed: int = 0) -> PruneData:
        """Hold `search_size` of `dataset` out as the search split (a fraction below 1, else an image count)."""
        dataset = _dataset_of(dataset)
        total = len(dataset)  # search_count refuses a split that leaves either side empty
        train_indices, search_indices = hold_out(total, search_count(search_size, total), seed)
        return cls(Subset(dataset, train_indices), Subset(dataset, search_indices))


@dataclass
class PruneResult:
    """What `prune` returns. `model`: the physically pruned network (a deep copy; the input is unchanged);
    `metrics`: cost, ratios, search accuracy and latency of the pruned network (see `PruneMetrics`);
    `record`: what the method's search did; `groups`: the channel groups of the unpruned network."""

    model: nn.Module
    mask: Mask
    metrics: PruneMetrics
    record: dict[str, Any]
    groups: ChannelGroups
    data: PruneData | None = None
    spec: ModelSpec | None = None  # set when the network is a zoo/torchvision model: `load` then needs none
    history: list = field(default_factory=list)  # EpochRecords of `finetune`


@dataclass
class PruneMetrics:
    """FLOPs are MACs of one sample's forward pass (Torch-Pruning's count); ratios are pruned / unpruned;
    `search_top1` is on `data.search` (None without data); `latency` maps each batch size to median seconds
    of both networks and their ratio, measured side by side in one run with `latency_threads` threads;
    `max_abs_diff_masked_vs_pruned` is over a random batch in eval mode, before BN recalibration (0 up to
    rounding: the pruning is exact)."""

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
    predicted_latency_ratio: float | None  # by the latency table, for latency budgets
    search_top1: float | None
    search_top1_full: float | None
    masks_evaluated: int
    latency: dict[str, dict[str, float]]
    latency_threads: int | None  # torch threads the latency was timed with (None: the process's count)
    max_abs_diff_masked_vs_pruned: float
    search_seconds: float
    seconds: float
    phase_seconds: dict[str, float]  # wall seconds of trace, graph, search, prune, latency (and finetune)
    search_top1_finetuned: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_data(source: str, in_channels: int, input_size: int, *, num_classes: int | None = None,
              search_size: float = 0.1, seed: int = 0, root: str = "data") -> PruneData:
    """PruneData from a name: `imagefolder:DIR` (your images, `search_size` held out) or a dataset the project
    knows (digits, fashion_mnist, cifar10, ...; its own train/search split under `root`: the test split is
    never loaded into a search). `num_classes`: the model's outputs, refused when the data has other classes."""
    if source.startswith(IMAGE_FOLDER_PREFIX):
        folder = source[len(IMAGE_FOLDER_PREFIX):]
        images = image_folder(folder, in_channels, input_size)
        _check_classes(source, len(images.classes), num_classes)
        return PruneData.split(images, search_size, seed)
    settings = dataset_settings({"name": source, "root": root}, source=f"--data {source}")
    info = dataset_info(settings)
    if (info.in_channels, info.input_size) != (in_channels, input_size):
        raise GraphpruneError(f"{source} images are {info.in_channels}x{info.input_size}x{info.input_size}, "
                              f"the model takes {in_channels}x{input_size}x{input_size}")
    _check_classes(source, info.num_classes, num_classes)
    splits = load_splits(settings)
    return PruneData(splits.train, splits.search)


def _check_classes(source: str, data_classes: int, model_classes: int | None) -> None:
    if model_classes is not None and model_classes != data_classes:
        raise GraphpruneError(f"{source} has {data_classes} classes, the model {model_classes} outputs; give "
                              f"--num-classes {data_classes} (or a model trained on these classes)")


def prune(
    model: nn.Module,
    example_inputs: torch.Tensor,
    target: str = "flops0.5",
    method: str = "gat_ppo",
    data: PruneData | Dataset | DataLoader | None = None,
    *,
    settings: Mapping[str, Any] | None = None,
    evaluations: int = DEFAULT_EVALUATIONS,
    seed: int = 0,
    min_channels: int = 1,
    search_images: int | None = None,
    device: str = "cpu",
    work_dir: str | Path | None = None,
    latency_batch_sizes: Sequence[int] = (1,),
    latency_repeats: int = 20,
    latency: Mapping[str, Any] | None = None,
    latency_threads: int | None = 1,
    spec: ModelSpec | None = None,
) -> PruneResult:
    """Prune `model` to `target` (e.g. "flops0.5": keep at most half its FLOPs; "params0.3") with `method`.

    example_inputs: a batch [B, C, H, W] the model accepts (only its shape is used beyond one check run);
    data: `PruneData`, or one dataset to split (10% held out for the search); needed by search methods;
    settings: the method's own settings (as under `search.methods.<method>` in a config);
    evaluations: distinct masks a search method may score; search_images: search images scored per mask
    (default: all of `data.search`); work_dir: where a search keeps its log and checkpoint (resumable;
    default: a temporary folder); latency: for "latency<ratio>" targets, what is timed (batch_size 1, device
    "cpu", grid 5, cache_dir: see the config's search.latency); latency_batch_sizes: batch sizes at which the
    pruned and unpruned networks are timed side by side for the metrics, with `latency_threads` torch threads
    (None: the process's count); spec: the zoo description of `model`, stored by `save` (CLI use).
    The caller's model is left unchanged (the search works on a copy); its BN statistics are what the search
    starts from. With data, the returned network carries the BN statistics its mask was scored with, so its
    accuracy on `data.search` is `metrics.search_top1`.
    """
    start = time.perf_counter()
    phases = PhaseClock()
    request = parse_request(method, target, settings)  # before any tracing: a misspelt name or setting fails at once
    prune_data = _as_prune_data(data)
    if prune_data is None and (request.method.needs_evaluator or request.method.needs_graph):
        raise GraphpruneError(f"method {method} scores masks on held-out images: pass data=PruneData(train, "
                              "search) or a dataset to split (the CLI: --data)")
    defaults = search_settings({"latency": dict(latency or {})}, source="graphprune.prune")
    torch_device = resolve_device(device)
    model = _working_copy(model, torch_device)  # the caller's model is never touched (mode, device, hooks)
    input_shape = _input_shape(model, example_inputs)
    search_set = train_set = draw = graph = None
    if prune_data is not None:  # the user's images are checked before the network is traced
        _check_images(prune_data, input_shape)
        search_set, train_set = prune_data.search, prune_data.train
        draw = ImageDraw(_search_images(prune_data, search_images), 0, defaults["calibration_batches"],
                         _calibration_batch_size(prune_data, defaults), defaults["recalibrate_bn"])
        graph = graph_from_training_images(train_set, seed, torch_device)
    setup = build_search(model, input_shape, min_channels=min_channels, search_set=search_set, train_set=train_set,
                         draw=draw, seed=seed, device=torch_device, graph=graph, budget=request.budget,
                         latency=defaults["latency"], phase=phases)
    cost, groups, evaluator = setup.cost, setup.groups, setup.evaluator
    if request.method.needs_graph:
        with phases("graph"):
            setup.graph  # noqa: B018 (built here, timed as its own phase)

    with tempfile.TemporaryDirectory(prefix="graphprune-") as scratch, phases("search"):
        out_dir = None
        if request.method.needs_evaluator:  # searches keep a log (gat_ppo: a checkpoint to resume from)
            out_dir = Path(work_dir) if work_dir is not None else Path(scratch)
            out_dir.mkdir(parents=True, exist_ok=True)
        context = setup.context(request, seed=seed, out_dir=out_dir, evaluations=evaluations)
        result = request.method.search(context, request.budget, request.settings)
    mask = result.mask
    with phases("prune"):
        pruned = prune_model(model, groups, mask).eval()
        # Compared before recalibration: both networks still carry the unpruned network's BN statistics.
        difference = masked_vs_pruned_difference(model, pruned, groups, mask, seed)
        if evaluator is not None:  # the statistics the search scored this mask with: the model scores its metric
            evaluator.calibrate(pruned)
    with phases("latency"), torch_threads(latency_threads):
        latency = measure_latency(pruned, model, input_shape, tuple(latency_batch_sizes), torch_device,
                                  repeats=latency_repeats) if latency_batch_sizes else {}
    flops, params = cost.of_mask(mask)
    metrics = PruneMetrics(
        method=method, target=str(request.budget), seed=seed, min_channels=min_channels, groups=len(groups),
        channels=sum(groups.sizes), channels_kept=sum(mask.counts), flops=flops, params=params,
        full_flops=cost.full_flops, full_params=cost.full_params, flops_ratio=flops / cost.full_flops,
        params_ratio=params / cost.full_params,
        predicted_latency_ratio=cost.ratio("latency", mask.counts) if cost.latency is not None else None,
        search_top1=evaluator(mask) if evaluator else None,
        search_top1_full=evaluator(groups.full_mask()) if evaluator else None,
        masks_evaluated=int(result.record["masks_evaluated"]),
        latency={str(b): v for b, v in latency.items()}, latency_threads=latency_threads,
        max_abs_diff_masked_vs_pruned=difference,
        search_seconds=float(result.record["search_seconds"]), seconds=time.perf_counter() - start,
        phase_seconds=phases.seconds,
    )
    log.info("%s %s: kept %.3f of FLOPs, %.3f of params%s in %.1f s", method, request.budget, metrics.flops_ratio,
             metrics.params_ratio, "" if metrics.search_top1 is None else f", search top-1 {metrics.search_top1:.4f}",
             metrics.seconds)
    return PruneResult(pruned, mask, metrics, result.record, groups, prune_data, spec)


def finetune(
    result: PruneResult,
    train_data: Dataset | DataLoader | None = None,
    *,
    search_data: Dataset | DataLoader | None = None,
    seed: int = 0,
    device: str = "cpu",
    run_dir: str | Path | None = None,
    **recipe: Any,
) -> PruneResult:
    """Fine-tune `result.model` in place with the project's training loop and the pipeline's fine-tuning recipe
    (a config's `finetune` default: SGD, lr 0.01, cosine schedule, 10 epochs; `recipe` overrides any of its
    keys, e.g. epochs=3, batch_size=64) on `train_data` (default: the data `prune` used). `run_dir` keeps
    last.pt/history.csv, so an interrupted call resumes.
    Returns `result`, with `history` and `metrics.search_top1_finetuned` filled in."""
    train_set = _dataset_of(train_data) if train_data is not None else (result.data.train if result.data else None)
    search_set = _dataset_of(search_data) if search_data is not None else (result.data.search if result.data else None)
    if train_set is None or search_set is None:
        raise GraphpruneError("finetune needs training images and held-out images to report on: pass train_data "
                              "and search_data, or prune with data=...")
    recipe_settings: TrainRecipe = finetune_recipe(recipe, source="graphprune.finetune")
    clock = PhaseClock()
    torch_device = resolve_device(device)
    config_hash = stable_hash({"recipe": asdict(recipe_settings), "mask": result.mask.key(), "seed": seed})
    with tempfile.TemporaryDirectory(prefix="graphprune-finetune-") as scratch, clock("finetune"):
        trained = train(result.model, recipe_settings, train_set, search_set, run_dir=run_dir or scratch,
                        seed=seed, config_hash=config_hash, device=torch_device)
    result.model = trained.model.eval()
    result.history = trained.history
    result.metrics.search_top1_finetuned = trained.history[-1].search_top1 if trained.history else None
    result.metrics.phase_seconds.update(clock.seconds)
    return result


def save(result: PruneResult, path: str | Path) -> None:
    """Write the pruned network as weights + mask (+ its zoo spec if known): `load` rebuilds it without
    unpickling anything."""
    m = result.metrics
    meta = {"method": m.method, "target": m.target, "seed": m.seed, "metrics": m.to_dict(), "search": result.record}
    save_pruned(path, result.spec, result.mask, result.model, meta, result.groups)


def load(path: str | Path, model: nn.Module | None = None) -> PrunedModel:
    """Rebuild a pruned network written by `save` (or `graphprune prune`). A zoo network needs nothing else;
    a user-defined one needs `model`, an unpruned instance of its architecture (its weights are replaced)."""
    return load_pruned(path, model)


# ------------------------------------------------------------------------------------------------ helpers


class PhaseClock:
    """Wall seconds of the named phases of one call (`with clock("search"): ...`), each logged as it ends,
    so a user sees where the time went (tracing, graph, search, latency timing, fine-tuning)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
        log.info("%s: %.1f s", phase, self.seconds[phase])


def _working_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy of the caller's model on `device` in eval mode: tracing, searching and pruning never touch
    the caller's parameters, buffers, mode, device or hooks."""
    try:
        working = copy.deepcopy(model)
    except Exception as exc:  # a module holding something deepcopy refuses (a lock, a generator, ...)
        raise GraphpruneError(f"cannot copy {type(model).__name__} ({type(exc).__name__}: {exc}); prune works on "
                              "a copy so that your model stays unchanged") from exc
    return working.to(device).eval()


def _dataset_of(data: Dataset | DataLoader) -> Dataset:
    return data.dataset if isinstance(data, DataLoader) else data


def _as_prune_data(data: PruneData | Dataset | DataLoader | None) -> PruneData | None:
    if data is None or isinstance(data, PruneData):
        return data
    if isinstance(data, tuple | list):
        raise GraphpruneError("pass data as PruneData(train, search) rather than a tuple, so the two "
                              "splits cannot be swapped")
    return PruneData.split(data)


def _input_shape(model: nn.Module, example_inputs: torch.Tensor) -> tuple[int, ...]:
    if not isinstance(example_inputs, torch.Tensor) or example_inputs.dim() < 2:
        raise GraphpruneError("example_inputs must be a batch tensor [B, C, H, W] the model accepts, got "
                              f"{getattr(example_inputs, 'shape', type(example_inputs).__name__)}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with evaluation_mode(model), torch.no_grad():
            model(example_inputs[:1].to(device))
    except Exception as exc:  # the user's forward pass: any failure means the inputs do not fit
        raise GraphpruneError(f"the model does not accept example_inputs of shape "
                              f"{list(example_inputs.shape)}: {type(exc).__name__}: {exc}") from exc
    return tuple(example_inputs.shape[1:])


def _check_images(data: PruneData, input_shape: tuple[int, ...]) -> None:
    for name, dataset in (("train", data.train), ("search", data.search)):
        if len(dataset) < 1:
            raise GraphpruneError(f"data.{name} holds no images")
        shape = tuple(dataset[0][0].shape)
        if shape != input_shape:
            raise GraphpruneError(f"data.{name} yields images of shape {list(shape)}, but example_inputs are "
                                  f"{list(input_shape)} per sample")


def _search_images(data: PruneData, wanted: int | None) -> int | None:
    if wanted is not None and wanted > len(data.search):
        raise GraphpruneError(f"search_images={wanted}, but data.search holds only {len(data.search)} images; "
                              "hold out more (PruneData.split(dataset, search_size=...)) or ask for fewer")
    return wanted


def _calibration_batch_size(data: PruneData, defaults: Mapping[str, Any]) -> int:
    """The config's calibration batch size, or fewer images per batch when the training split is small."""
    size = min(defaults["calibration_batch_size"], len(data.train) // defaults["calibration_batches"])
    if size < 1:
        raise GraphpruneError(f"data.train holds {len(data.train)} images; BN recalibration needs at least "
                              f"{defaults['calibration_batches']}")
    return size
