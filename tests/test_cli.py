import json
import subprocess
import sys
from pathlib import Path

from graphprune.checkpoint import load_checkpoint, load_model
from graphprune.cli import main
from graphprune.config import load_config
from graphprune.data import load_splits, make_loader
from graphprune.evaluate import evaluate
from graphprune.paths import training_checkpoint

METRIC_KEYS = {"test_top1", "test_top5", "test_loss", "search_top1", "search_top5", "search_loss", "params",
               "flops", "seconds", "epochs", "config_hash"}


def test_pretrain_writes_a_complete_baseline_and_reuses_it(tiny_config, capsys, caplog):
    assert main(["pretrain", "--config", str(tiny_config), "--experiment", "tiny"]) == 0
    config = load_config(tiny_config)
    paths = config.paths("tiny")
    metrics = json.loads(Path(paths.baseline_metrics()).read_text())
    assert set(metrics) == METRIC_KEYS
    assert metrics["epochs"] == 2 and metrics["params"] > 0 and metrics["flops"] > 0
    assert 0 <= metrics["test_top1"] <= metrics["test_top5"] <= 1
    assert len(Path(paths.baseline_history()).read_text().splitlines()) == 1 + 2
    assert not Path(training_checkpoint(paths.baseline_dir())).exists()

    baseline = load_model(paths.baseline_model())  # weights_only loading, rebuilt from the stored spec
    experiment = config.experiment("tiny")
    assert baseline.spec == experiment.model
    assert baseline.meta["config_hash"] == experiment.pretrain_hash
    test_loader = make_loader(load_splits(experiment.dataset).test, 16)
    assert evaluate(baseline.model, test_loader, "cpu")["top1"] == metrics["test_top1"]

    written = Path(paths.baseline_model()).stat().st_mtime_ns
    caplog.set_level("INFO")
    assert main(["pretrain", "--config", str(tiny_config), "--experiment", "tiny"]) == 0
    assert "is up to date" in caplog.text
    assert Path(paths.baseline_model()).stat().st_mtime_ns == written

    assert main(["pretrain", "--config", str(tiny_config), "--experiment", "tiny", "--force"]) == 0
    assert Path(paths.baseline_model()).stat().st_mtime_ns != written
    assert load_checkpoint(paths.baseline_model())["meta"]["metrics"] == json.loads(
        Path(paths.baseline_metrics()).read_text())


def expect_user_error(args: list[str], capsys) -> str:
    assert main(args) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("graphprune: error: ") and "Traceback" not in stderr
    return stderr


def test_user_errors_exit_2_with_a_message(tiny_section, config_with, tmp_path, capsys):
    experiments = {
        "bad-dataset": {**tiny_section, "dataset": {"name": "foo"}},
        "bad-model": {**tiny_section, "model": {"name": "resnet21"}},
        "no-cifar": {**tiny_section, "dataset": {"name": "cifar10", "root": str(tmp_path / "empty")}},
    }
    for name, section in experiments.items():
        config = config_with({name: section})
        stderr = expect_user_error(["pretrain", "--config", str(config), "--experiment", name], capsys)
        assert {
            "bad-dataset": "experiments.bad-dataset.dataset.name: 'foo' is not one of ['digits'",
            "bad-model": "unknown model 'resnet21'",
            "no-cifar": f"cifar10 not found under {tmp_path / 'empty'}",
        }[name] in stderr

    config = config_with({"tiny": tiny_section})
    stderr = expect_user_error(["pretrain", "--config", str(config), "--experiment", "other"], capsys)
    assert "no experiment 'other'; known experiments: tiny" in stderr
    stderr = expect_user_error(["pretrain", "--config", str(tmp_path / "absent.yaml"), "--experiment", "x"], capsys)
    assert "absent.yaml does not exist" in stderr


def test_console_script_prints_no_traceback(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "graphprune.cli", "pretrain", "--config", str(tmp_path / "absent.yaml"),
         "--experiment", "x"],
        capture_output=True, text=True, check=False,
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    last_line = completed.stderr.strip().splitlines()[-1]  # libraries may warn at import time
    assert last_line == f"graphprune: error: config file {tmp_path / 'absent.yaml'} does not exist"
