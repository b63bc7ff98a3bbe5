"""Fine-tune one searched mask: the `finetune` stage of the pipeline, and where test accuracy is measured.

Loads the trained baseline and `mask.pt`, removes the pruned channels physically, gives the pruned network
BN statistics of its own (when the search scored masks that way, `search.recalibrate_bn`, on the same
calibration images), measures its test accuracy before fine-tuning, fine-tunes it with the experiment's one
`finetune` recipe (the same for every method; resumes from `finetuned/last.pt`), measures test accuracy and
latency against the baseline, and writes `finetuned/{model.pt, history.csv, metrics.json}` atomically.
This module never chooses masks and never feeds the test split to training or to any decision.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from graphprune.checkpoint import atomic_write_json, load_model
from graphprune.config import Config, Experiment, stable_hash
from graphprune.data.splits import Splits, load_splits, make_loader
from graphprune.errors import GraphpruneError
from graphprune.network.cost import CostModel
from graphprune.network.evaluate import evaluate, recalibrate_batch_norm
from graphprune.network.latency import measure_latency
from graphprune.network.pruning import ChannelGroups, Mask, load_mask, prune_model, save_pruned
from graphprune.network.search_eval import calibration_images
from graphprune.paths import training_checkpoint
from graphprune.train import resolve_device, train

log = logging.getLogger(__name__)

# metrics.json names latency_ratio_b1 and _b64: batch 1 (interactive use) and a large batch (throughput).
LATENCY_BATCH_SIZES = (1, 64)
# Timed runs per batch size and network; kept modest because every fine-tune job pays for them.
LATENCY_REPEATS = 20
LATENCY_WARMUP = 3


@dataclass(frozen=True)
class FinetuneMetrics:
    """finetuned/metrics.json. Accuracies are fractions on the test split (search_top1: the search split,
    copied from search/record.json); flops are MACs of one sample (the CostModel, equal to Torch-Pruning's
    counter); ratios are pruned / baseline; latency ratios are medians of interleaved runs of both networks
    on `latency_device` in this job; `recipe` is the finetune TrainRecipe as a dict."""

    experiment: str
    method: str
    target: str
    seed: int
    flops: int
    params: int
    baseline_flops: int
    baseline_params: int
    flops_ratio: float
    params_ratio: float
    channels_kept: int
    channels: int
    search_top1: float
    reselect_top1: float | None  # on held-out search images, among the search's finalists (None: not reselected)
    bn_recalibrated: bool  # test_top1_pruned measured with BN statistics recalibrated on training batches
    test_top1_pruned: float
    test_top5_pruned: float
    test_top1_finetuned: float
    test_top5_finetuned: float
    test_loss_finetuned: float
    search_top1_finetuned: float
    latency_ratio_b1: float
    latency_ratio_b64: float
    latency: dict[str, dict[str, float]]
    latency_device: str
    search_seconds: float
    masks_evaluated: int
    finetune_seconds: float  # training time over all epochs, resumed runs included
    epochs: int
    recipe: dict[str, Any]
    config_hash: str


@dataclass
class PrunedBaseline:
    """The baseline of an experiment pruned physically by one search's mask, BN statistics as the search saw them,
    with what measuring it needs (the unpruned `baseline`, the splits, the cost model)."""

    spec: Any  # models.spec.ModelSpec of the baseline
    baseline: torch.nn.Module
    groups: ChannelGroups
    mask: Mask
    cost: CostModel
    pruned: torch.nn.Module
    splits: Splits
    device: torch.device
    record: dict[str, Any]  # the search's search/record.json


def pruned_baseline(config: Config, experiment: Experiment, method: str, target: str, seed: int, *,
                    device: str | None = None) -> PrunedBaseline:
    """Load the trained baseline and the mask `method` chose for `target` with `seed`, remove the pruned channels
    and (with `search.recalibrate_bn`) recalibrate BN on the search seed's calibration batches, as the search
    scored the mask. Raises GraphpruneError naming the command that makes a missing input."""
    paths = config.paths(experiment.name)
    _require(paths.baseline_model(), f"graphprune pretrain --experiment {experiment.name}")
    search_command = (f"graphprune search --experiment {experiment.name} --method {method} --target {target} "
                      f"--seed {seed}")
    _require(paths.mask(method, target, seed), search_command)
    _require(paths.search_record(method, target, seed), search_command)
    record = json.loads(Path(paths.search_record(method, target, seed)).read_text())

    torch_device = resolve_device(device or config.device)
    loaded = load_model(paths.baseline_model())
    model = loaded.model.to(torch_device)
    groups = ChannelGroups(model, loaded.spec.input_shape, min_channels=experiment.search.min_channels)
    mask = load_mask(paths.mask(method, target, seed), groups)
    pruned = prune_model(model, groups, mask)
    splits = load_splits(experiment.dataset)
    s = experiment.search
    if s.recalibrate_bn:
        recalibrate_batch_norm(pruned, calibration_images(
            splits.train, s.calibration_batches, s.calibration_batch_size, seed, torch_device))  # as the search
    return PrunedBaseline(loaded.spec, model, groups, mask, CostModel(model, groups), pruned, splits, torch_device,
                          record)


def finetune(config: Config, experiment: Experiment, method: str, target: str, seed: int, *,
             device: str | None = None) -> FinetuneMetrics:
    """Prune the baseline of `experiment` by the mask `method` chose for `target` with `seed`, fine-tune it
    (seeded by `seed`) and write results/<exp>/<method>/<target>/seed<seed>/finetuned/; returns the metrics
    written to metrics.json."""
    paths = config.paths(experiment.name)
    network = pruned_baseline(config, experiment, method, target, seed, device=device)
    spec, model, groups, mask, cost = network.spec, network.baseline, network.groups, network.mask, network.cost
    pruned, splits, torch_device, record = network.pruned, network.splits, network.device, network.record
    flops, params = cost.of_mask(mask)
    recipe = experiment.finetune
    test_loader = make_loader(splits.test, recipe.batch_size)
    s = experiment.search
    before = evaluate(pruned, test_loader, torch_device)
    log.info("%s %s %s: test top-1 %.4f before fine-tuning", experiment.name, method, target, before["top1"])

    # The mask's digest joins the config hash: last.pt of another mask must never be resumed into this one.
    config_hash = stable_hash({"finetune": experiment.finetune_hash(method, seed), "mask": mask.key()})
    run_dir = paths.finetuned_dir(method, target, seed)
    metadata = {"arch": spec.to_dict(), "experiment": experiment.name, "method": method, "target": target,
                "seed": seed, "mask": mask.key()}
    result = train(pruned, recipe, splits.train, splits.search, run_dir=run_dir, seed=seed,
                   config_hash=config_hash, device=torch_device, metadata=metadata)
    after = evaluate(pruned, test_loader, torch_device)
    search_after = evaluate(pruned, make_loader(splits.search, recipe.batch_size), torch_device)
    latency = measure_latency(pruned, model, spec.input_shape, LATENCY_BATCH_SIZES, torch_device,
                              warmup=LATENCY_WARMUP, repeats=LATENCY_REPEATS)

    metrics = FinetuneMetrics(
        experiment=experiment.name, method=method, target=target, seed=seed,
        flops=flops, params=params, baseline_flops=cost.full_flops, baseline_params=cost.full_params,
        flops_ratio=flops / cost.full_flops, params_ratio=params / cost.full_params,
        channels_kept=sum(mask.counts), channels=sum(groups.sizes),
        search_top1=float(record["search_top1"]), reselect_top1=record.get("reselect_top1"), bn_recalibrated=s.recalibrate_bn,
        test_top1_pruned=before["top1"], test_top5_pruned=before["top5"],
        test_top1_finetuned=after["top1"], test_top5_finetuned=after["top5"], test_loss_finetuned=after["loss"],
        search_top1_finetuned=search_after["top1"],
        latency_ratio_b1=latency[1]["ratio"], latency_ratio_b64=latency[64]["ratio"],
        latency={str(batch): value for batch, value in latency.items()}, latency_device=torch_device.type,
        search_seconds=float(record["search_seconds"]), masks_evaluated=int(record["masks_evaluated"]),
        finetune_seconds=result.seconds, epochs=len(result.history), recipe=asdict(recipe),
        config_hash=config_hash,
    )
    atomic_write_json(asdict(metrics), paths.finetuned_metrics(method, target, seed))
    save_pruned(paths.finetuned_model(method, target, seed), spec, mask, pruned,
                {**metadata, "metrics": asdict(metrics), "config_hash": config_hash}, groups)
    # history.csv stays (train wrote it); the resumable state is no longer needed once model.pt exists.
    Path(training_checkpoint(run_dir)).unlink(missing_ok=True)
    return metrics


def _require(path: str, command: str) -> None:
    if not Path(path).is_file():
        raise GraphpruneError(f"{path} does not exist; `{command}` writes it (or ask Snakemake for the "
                              "finetuned metrics, which runs every missing stage)")

