"""The `pretrain` stage: train an experiment's baseline and write results/<exp>/baseline/.

Outputs: model.pt (architecture spec + state dict + metadata), metrics.json, history.csv. An interrupted run
resumes from baseline/last.pt; a complete baseline for the same config is reused unless forced.
The test split is evaluated once, at the end, and only reported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch_pruning as tp

from graphprune.checkpoint import atomic_write_json, load_checkpoint, save_model
from graphprune.config import Config, Experiment
from graphprune.data.splits import load_splits, make_loader
from graphprune.models import build_model
from graphprune.network.evaluate import evaluate
from graphprune.paths import ResultPaths, training_checkpoint
from graphprune.train import resolve_device, seed_everything, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaselineMetrics:
    """metrics.json of a baseline; accuracies are fractions, flops are MACs of one image's forward pass."""

    test_top1: float
    test_top5: float
    test_loss: float
    search_top1: float
    search_top5: float
    search_loss: float
    params: int
    flops: int
    seconds: float  # training time over all epochs, resumed runs included
    epochs: int
    config_hash: str


def pretrain(
    config: Config, experiment: Experiment, *, device: str | None = None, force: bool = False
) -> BaselineMetrics:
    """Train (or resume, or reuse) the baseline of `experiment`; returns its metrics."""
    paths = config.paths(experiment.name)
    if not force and _is_up_to_date(paths, experiment):
        log.info("%s is up to date; use --force to retrain", paths.baseline_model())
        return BaselineMetrics(**json.loads(Path(paths.baseline_metrics()).read_text()))
    stale = [paths.baseline_model(), paths.baseline_metrics()]
    if force:
        stale.append(training_checkpoint(paths.baseline_dir()))
    for path in stale:
        Path(path).unlink(missing_ok=True)

    torch_device = resolve_device(device or config.device)
    splits = load_splits(experiment.dataset)
    seed_everything(experiment.seed)  # model initialisation
    model = build_model(experiment.model)
    metadata = {"arch": experiment.model.to_dict(), "dataset": experiment.dataset.name,
                "experiment": experiment.name}
    result = train(
        model, experiment.pretrain, splits.train, splits.search, run_dir=paths.baseline_dir(),
        seed=experiment.seed, config_hash=experiment.pretrain_hash, device=torch_device, metadata=metadata,
    )
    batch_size = experiment.pretrain.batch_size
    test = evaluate(model, make_loader(splits.test, batch_size), torch_device)
    search = evaluate(model, make_loader(splits.search, batch_size), torch_device)
    example_input = torch.zeros(1, *experiment.model.input_shape, device=torch_device)
    flops, params = tp.utils.count_ops_and_params(model.eval(), example_input)
    metrics = BaselineMetrics(
        test_top1=test["top1"], test_top5=test["top5"], test_loss=test["loss"],
        search_top1=search["top1"], search_top5=search["top5"], search_loss=search["loss"],
        params=int(params), flops=int(flops), seconds=result.seconds, epochs=len(result.history),
        config_hash=experiment.pretrain_hash,
    )
    atomic_write_json(asdict(metrics), paths.baseline_metrics())
    # model.pt last: its presence (with a matching hash) is what marks the baseline complete.
    save_model(paths.baseline_model(), model, experiment.model, {**metadata, "metrics": asdict(metrics),
                                                                 "config_hash": experiment.pretrain_hash})
    Path(training_checkpoint(paths.baseline_dir())).unlink(missing_ok=True)
    return metrics


def _is_up_to_date(paths: ResultPaths, experiment: Experiment) -> bool:
    files = [paths.baseline_model(), paths.baseline_metrics(), paths.baseline_history()]
    if not all(Path(path).is_file() for path in files):
        return False
    stored_hash = load_checkpoint(paths.baseline_model()).get("meta", {}).get("config_hash")
    if stored_hash != experiment.pretrain_hash:
        log.info("%s was trained for config %s, now %s: retraining",
                 paths.baseline_model(), stored_hash, experiment.pretrain_hash)
        return False
    return True
