import csv
import dataclasses
import math

import pytest
import torch
from torch import nn

from graphprune.config import load_config, train_recipe
from graphprune.data.splits import load_splits, make_loader
from graphprune.errors import GraphpruneError
from graphprune.models import build_model
from graphprune.network.evaluate import evaluate
from graphprune.paths import training_checkpoint, training_history
from graphprune.train import HISTORY_COLUMNS, resolve_device, seed_everything, train

CPU = torch.device("cpu")


class ConstantLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, images):
        return self.logits.expand(len(images), -1)


def test_evaluate_counts_top1_top5_and_loss():
    labels = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])
    loader = make_loader(torch.utils.data.TensorDataset(torch.zeros(8, 1), labels), batch_size=3)
    logits = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]  # ranks the classes 0 > 1 > ... > 6
    metrics = evaluate(ConstantLogits(logits), loader, CPU)
    assert metrics["top1"] == pytest.approx(2 / 8)
    assert metrics["top5"] == pytest.approx(6 / 8)  # classes 0-4
    expected_loss = -torch.log_softmax(torch.tensor(logits), 0)[labels].mean().item()
    assert metrics["loss"] == pytest.approx(expected_loss)


def test_top5_uses_all_classes_when_fewer_than_five():
    loader = make_loader(torch.utils.data.TensorDataset(torch.zeros(4, 1), torch.tensor([0, 1, 2, 2])), 4)
    metrics = evaluate(ConstantLogits([0.0, 0.0, 0.0]), loader, CPU)
    assert metrics["top5"] == 1.0
    assert metrics["loss"] == pytest.approx(math.log(3))


def test_lr_schedules():
    cosine = train_recipe({"epochs": 10, "lr": 0.1, "warmup_epochs": 2})
    assert [cosine.lr_factor(e) for e in (0, 1, 2)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert cosine.lr_factor(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    step = train_recipe({"epochs": 10, "schedule": "step", "milestones": [3, 6], "gamma": 0.5})
    assert [step.lr_factor(e) for e in (0, 2, 3, 5, 6, 9)] == [1, 1, 0.5, 0.5, 0.25, 0.25]


def tiny_run(experiment, run_dir, epochs=4, config_hash="same", on_epoch_end=None, init_seed=3):
    """Train the tiny fake-data experiment for `epochs` in `run_dir`; returns (TrainResult, model)."""
    splits = load_splits(experiment.dataset)
    seed_everything(init_seed)
    model = build_model(experiment.model)
    recipe = dataclasses.replace(experiment.pretrain, epochs=epochs)
    result = train(model, recipe, splits.train, splits.search, run_dir=run_dir, seed=experiment.seed,
                   config_hash=config_hash, device=CPU, on_epoch_end=on_epoch_end)
    return result, model


def without_seconds(history):
    return [dataclasses.replace(record, seconds=0.0) for record in history]


def test_interrupted_training_resumes_bit_identical(tmp_path, tiny_experiment):
    uninterrupted, reference = tiny_run(tiny_experiment, tmp_path / "straight")

    def interrupt_after_second_epoch(record):
        if record.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiny_run(tiny_experiment, tmp_path / "interrupted", on_epoch_end=interrupt_after_second_epoch)
    # a different initialisation proves the weights come from the checkpoint
    resumed, model = tiny_run(tiny_experiment, tmp_path / "interrupted", init_seed=99)

    assert resumed.resumed_from_epoch == 2
    assert without_seconds(resumed.history) == without_seconds(uninterrupted.history)
    reference_state, resumed_state = reference.state_dict(), model.state_dict()
    assert all(torch.equal(reference_state[name], resumed_state[name]) for name in reference_state)


def test_changed_config_starts_over_and_history_is_written(tmp_path, tiny_experiment):
    tiny_run(tiny_experiment, tmp_path, epochs=2, config_hash="first")
    result, _ = tiny_run(tiny_experiment, tmp_path, epochs=3, config_hash="second")
    assert result.resumed_from_epoch == 0 and [r.epoch for r in result.history] == [1, 2, 3]
    with open(training_history(tmp_path)) as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == HISTORY_COLUMNS == [
        "epoch", "lr", "train_loss", "train_top1", "search_loss", "search_top1", "seconds"
    ]
    assert [float(row["search_top1"]) for row in rows] == [r.search_top1 for r in result.history]
    assert all(0 <= r.train_top1 <= 1 and r.train_loss > 0 for r in result.history)


def test_corrupt_training_checkpoint_is_named(tmp_path, tiny_experiment):
    (tmp_path / "last.pt").write_bytes(b"\x00garbage")
    with pytest.raises(GraphpruneError, match=f"cannot read checkpoint {training_checkpoint(tmp_path)}"):
        tiny_run(tiny_experiment, tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_user_error():
    with pytest.raises(GraphpruneError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU


@pytest.mark.slow
def test_default_recipe_trains_resnet20_on_digits_to_95_percent(tmp_path, repo_root):
    experiment = load_config(repo_root / "config.yaml").experiment("digits-resnet20")
    assert experiment.model.name == "resnet20" and experiment.dataset.name == "digits"
    splits = load_splits(experiment.dataset)
    seed_everything(experiment.seed)
    model = build_model(experiment.model)
    train(model, experiment.pretrain, splits.train, splits.search, run_dir=tmp_path, seed=experiment.seed,
          config_hash=experiment.pretrain_hash, device=CPU)
    assert evaluate(model, make_loader(splits.test, 256), CPU)["top1"] >= 0.95
