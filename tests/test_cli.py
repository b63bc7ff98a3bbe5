import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

# Imported before any test runs main(): numba compiles these as the environment says (with JIT by default).
from tianshou.algorithm.algorithm_base import _gae, _nstep_return

from graphprune.checkpoint import load_checkpoint, load_model
from graphprune.cli import main
from graphprune.config import load_config
from graphprune.data.splits import load_splits, make_loader
from graphprune.network.evaluate import evaluate
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
            "bad-dataset": "experiments.bad-dataset.dataset.name: unknown dataset 'foo'; known datasets: digits",
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


def test_commands_run_tianshou_helpers_without_jit_and_the_numbers_stay_the_same(monkeypatch):
    if hasattr(_gae, "py_func"):  # compiled here (numba rereads its settings when it compiles: do it first)
        rng = np.random.default_rng(0)
        size = 608  # one PPO iteration of the default search: 32 episodes of 19 steps
        values, next_values, rewards = rng.normal(size=(3, size))
        ends = rng.random(size) < 1 / 19
        assert np.array_equal(_gae(values, next_values, rewards, ends, 1.0, 0.95),
                              _gae.py_func(values, next_values, rewards, ends, 1.0, 0.95))
        indices = rng.integers(0, size, (1, 64))
        target_q = rng.normal(size=(64, 1)).astype(np.float32)
        assert np.array_equal(_nstep_return(rewards, ends, target_q, indices, 0.99, 1),
                              _nstep_return.py_func(rewards, ends, target_q, indices, 0.99, 1))
    monkeypatch.delenv("NUMBA_DISABLE_JIT", raising=False)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "NUMBA_DISABLE_JIT" not in os.environ, "numba is loaded here: switching it now would break it"
    script = ("import os\nfrom graphprune.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n"
              "    print(os.environ.get('NUMBA_DISABLE_JIT'))")
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, check=True)
    assert run.stdout.strip().splitlines()[-1] == "1"  # a command's own process runs without the JIT


def test_train_agent_errors_name_what_to_do(tiny_config, capsys):
    stderr = expect_user_error(["train-agent", "--config", str(tiny_config), "--agent", "shared"], capsys)
    assert "no agent 'shared'; known agents: none" in stderr
    config = yaml.safe_load(tiny_config.read_text())
    config["agents"] = {"shared": {"experiments": ["tiny"], "budgets": ["flops0.5"]}}
    tiny_config.write_text(yaml.safe_dump(config))
    stderr = expect_user_error(["train-agent", "--config", str(tiny_config), "--agent", "shared"], capsys)
    assert "baseline/model.pt does not exist; run the stage that writes it first" in stderr
