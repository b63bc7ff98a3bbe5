"""The examples in examples/ run as a user would run them (smaller, so the suite stays fast)."""

import importlib.util
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prune_resnet18_meets_its_budget_and_reports_speed(debian_fashion_mnist, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the example prepares data/ in the working directory
    example = load_example("prune_resnet18")
    report = example.main(["--train-images", "300", "--test-images", "100", "--epochs", "1", "--evaluations", "2",
                           "--finetune-epochs", "1"])
    assert report["target"] == "latency0.6" and report["predicted_latency_ratio"] <= 0.6
    # Measured side by side at batch 1: a network with 60% of the predicted latency runs faster.
    assert 0 <= report["test_top1_pruned"] <= 1 and report["speedup_b1"] > 1.0
