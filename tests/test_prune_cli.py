"""`graphprune prune` end to end: files, metrics within their bounds, checkpoints, and user errors as one line."""

import json
import re

import pytest
import torch

from graphprune.checkpoint import save_model
from graphprune.cli import main
from graphprune.models import ModelSpec, build_model
from graphprune.network.pruning import ChannelGroups, load_mask, load_pruned

DIGITS_FLAGS = ["--model", "resnet20", "--dataset-shape", "1,8,8", "--num-classes", "4"]
FAST_LATENCY = ["--latency-batch-sizes", "1,16", "--latency-repeats", "3"]


def run_prune(*flags: str) -> int:
    return main(["--quiet", "prune", *flags])


def test_prune_writes_a_loadable_network_within_budget(tmp_path):
    out = tmp_path / "out"
    assert run_prune(*DIGITS_FLAGS, "--method", "l1_uniform", "--target", "flops0.5", "--out", str(out),
                     "--onnx", *FAST_LATENCY) == 0
    assert {p.name for p in out.iterdir()} == {"model.pt", "mask.pt", "model.onnx", "metrics.json"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "l1_uniform" and metrics["target"] == "flops0.5" and metrics["groups"] == 12
    assert 0.45 < metrics["flops_ratio"] <= 0.5 + 1e-9
    assert 0 < metrics["params_ratio"] < 1 and metrics["flops"] < metrics["full_flops"]
    assert metrics["max_abs_diff_masked_vs_pruned"] < 1e-4
    assert set(metrics["latency"]) == {"1", "16"} and metrics["latency_ratio"] == metrics["latency"]["1"]["ratio"]
    assert all(v["ratio"] > 0 for v in metrics["latency"].values())
    assert metrics["onnx_exporter"] in ("torchscript", "dynamo")

    loaded = load_pruned(out / "model.pt")
    assert loaded.spec == ModelSpec("resnet20", num_classes=4, in_channels=1, input_size=8)
    assert loaded.meta["method"] == "l1_uniform"
    groups = ChannelGroups(build_model(loaded.spec), loaded.spec.input_shape)
    assert load_mask(out / "mask.pt", groups) == loaded.mask
    assert loaded.model(torch.zeros(2, 1, 8, 8)).shape == (2, 4)


def test_prune_takes_the_architecture_from_a_checkpoint(tmp_path):
    spec = ModelSpec("resnet20", num_classes=4, in_channels=1, input_size=8)
    torch.manual_seed(0)
    save_model(tmp_path / "baseline.pt", build_model(spec), spec, {"experiment": "test"})
    out = tmp_path / "out"
    assert run_prune("--checkpoint", str(tmp_path / "baseline.pt"), "--method", "global_bn", "--target", "params0.3",
                     "--out", str(out), *FAST_LATENCY) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params_ratio"] <= 0.3 and metrics["checkpoint"].endswith("baseline.pt")
    assert load_pruned(out / "model.pt").spec == spec


@pytest.mark.parametrize(("flags", "message"), [
    (["--method", "global_bn", "--target", "flops0.001"], "budget flops0.001 is impossible.*at least 0.00"),
    (["--method", "random_search", "--target", "flops0.5"], "random_search scores masks on held-out images.*--data"),
    (["--method", "magic", "--target", "flops0.5"], "unknown pruning method 'magic'"),
    (["--method", "l1_uniform", "--target", "flops50"], "malformed budget target"),
    (["--method", "l1_uniform", "--target", "flops0.5", "--dataset-shape", "1,8,9"], "square inputs"),
    (["--method", "l1_uniform", "--target", "flops0.5", "--data", "mnist"], "--data mnist: name: unknown dataset 'mnist'; known datasets: digits"),
    (["--method", "l1_uniform", "--target", "flops0.5", "--data", "imagefolder:/no/such/dir"], "does not exist"),
    (["--method", "l1_uniform", "--target", "flops0.5", "--finetune-epochs", "1"], "--finetune-epochs needs --data"),
    (["--method", "amc", "--target", "flops0.5", "--settings", "[1]"], "--settings must be a JSON object"),
    (["--method", "amc", "--target", "flops0.5", "--settings", '{"warp": 1}', "--data", "digits"],
     "unknown setting.*warp"),
    (["--method", "l1_uniform", "--target", "flops0.5", "--data", "digits"], "digits has 10 classes, the model 4"),
    (["--method", "l1_uniform", "--target", "flops0.5", "--latency-threads", "0"], "--latency-threads must be"),
])
def test_user_errors_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert run_prune(*DIGITS_FLAGS, *flags, "--out", str(out)) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert re.search(message, error.splitlines()[-1]), error
    assert not out.exists()  # refused before anything was written, and no empty folder left behind


def test_without_checkpoint_the_seed_decides_the_weights(tmp_path, caplog):
    masks = []
    for run in ("a", "b"):
        assert run_prune(*DIGITS_FLAGS, "--method", "l1_uniform", "--target", "flops0.5", "--seed", "3",
                         "--latency-batch-sizes", "1", "--latency-repeats", "1", "--out", str(tmp_path / run)) == 0
        masks.append(torch.load(tmp_path / run / "mask.pt", weights_only=True))
    assert masks[0] == masks[1]  # fresh weights drawn under --seed: the same command, the same result
    assert "UNTRAINED" in caplog.text
    assert run_prune(*DIGITS_FLAGS, "--method", "l1_uniform", "--target", "flops0.5", "--seed", "4",
                     "--latency-batch-sizes", "1", "--latency-repeats", "1", "--out", str(tmp_path / "c")) == 0
    assert torch.load(tmp_path / "c" / "mask.pt", weights_only=True) != masks[0]


def test_a_plain_state_dict_is_your_own_weights(tmp_path, capsys):
    spec = ModelSpec("resnet20", num_classes=4, in_channels=1, input_size=8)
    torch.manual_seed(5)
    net = build_model(spec)
    torch.save(net.state_dict(), tmp_path / "weights.pt")  # the README's two lines
    out = tmp_path / "out"
    assert run_prune(*DIGITS_FLAGS, "--checkpoint", str(tmp_path / "weights.pt"), "--method", "l1_uniform",
                     "--target", "flops0.5", "--latency-batch-sizes", "1", "--latency-repeats", "1",
                     "--out", str(out)) == 0
    loaded = load_pruned(out / "model.pt")
    groups = ChannelGroups(net, spec.input_shape)
    from graphprune.network.pruning import prune_model
    expected = prune_model(net.eval(), groups, loaded.mask).state_dict()
    assert all(torch.equal(expected[k], v) for k, v in loaded.model.state_dict().items())  # its weights, pruned

    wrong = tmp_path / "wrong.pt"
    torch.save(build_model(ModelSpec("resnet20", num_classes=7, in_channels=1, input_size=8)).state_dict(), wrong)
    assert run_prune(*DIGITS_FLAGS, "--checkpoint", str(wrong), "--method", "l1_uniform", "--target", "flops0.5",
                     "--out", str(tmp_path / "no")) == 2
    assert re.search(r"does not fit the model \(fc.bias \(7,\) \(expected \(4,\)\)", capsys.readouterr().err)

    torch.save(net, tmp_path / "pickled.pt")  # a pickled module is refused, with what to save instead
    assert run_prune(*DIGITS_FLAGS, "--checkpoint", str(tmp_path / "pickled.pt"), "--method", "l1_uniform",
                     "--target", "flops0.5", "--out", str(tmp_path / "no")) == 2
    assert "torch.save(model.state_dict(), path)" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_one_shot_methods_draw_no_search_bar(tmp_path, capsys):
    assert run_prune("--model", "resnet20", "--data", "digits", "--method", "l1_uniform", "--target", "flops0.5",
                     "--latency-batch-sizes", "1", "--latency-repeats", "1", "--out", str(tmp_path / "out")) == 0
    assert "mask/s" not in capsys.readouterr().err


def test_flags_contradicting_the_checkpoint_are_refused(tmp_path, capsys):
    spec = ModelSpec("resnet20", num_classes=4, in_channels=1, input_size=8)
    save_model(tmp_path / "baseline.pt", build_model(spec), spec, {})
    assert run_prune("--checkpoint", str(tmp_path / "baseline.pt"), "--input-size", "32", "--method", "random",
                     "--target", "flops0.5", "--out", str(tmp_path / "out")) == 2
    assert "input_size=32 (checkpoint: 8)" in capsys.readouterr().err


def test_search_method_on_a_named_dataset(tmp_path):
    out = tmp_path / "out"
    assert run_prune("--model", "resnet20", "--data", "digits", "--method", "random_search", "--target", "flops0.5",
                     "--evaluations", "4", "--search-images", "64", "--out", str(out), *FAST_LATENCY) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["masks_evaluated"] == 4 and metrics["flops_ratio"] <= 0.5
    assert 0 <= metrics["search_top1"] <= 1 and metrics["model"] == "resnet20"
    assert load_pruned(out / "model.pt").spec == ModelSpec("resnet20", num_classes=10, in_channels=1, input_size=8)


def test_image_folder_with_fine_tuning(tmp_path):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for label in range(2):  # dark and bright images: two classes a network can tell apart
        (tmp_path / "images" / f"class{label}").mkdir(parents=True)
        for i in range(12):
            pixels = (torch.rand(10, 10, 3, generator=generator) * 100 + 150 * label).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "images" / f"class{label}" / f"{i}.png")
    out = tmp_path / "out"
    assert run_prune("--model", "resnet20", "--input-size", "8", "--num-classes", "2",
                     "--data", f"imagefolder:{tmp_path / 'images'}", "--search-size", "6",
                     "--method", "l1_ratio_search", "--evaluations", "3", "--target", "params0.5",
                     "--finetune-epochs", "1", "--out", str(out), *FAST_LATENCY) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["masks_evaluated"] == 3 and metrics["params_ratio"] <= 0.5
    assert metrics["search_top1_finetuned"] is not None
    assert (out / "finetune" / "history.csv").is_file()
    assert not (out / "finetune" / "last.pt").exists()  # the resumable state goes once model.pt is written
    assert {p.name for p in out.iterdir()} == {"model.pt", "mask.pt", "metrics.json", "search", "finetune"}
    assert metrics["latency_threads"] == 1
    assert {"trace", "search", "prune", "latency", "finetune"} <= set(metrics["phase_seconds"])

    kept = tmp_path / "kept"
    # 2 classes in the folder, 3 outputs: refused before anything is built
    assert run_prune("--model", "resnet20", "--input-size", "8", "--num-classes", "3",
                     "--data", f"imagefolder:{tmp_path / 'images'}", "--method", "l1_uniform",
                     "--target", "params0.5", "--out", str(kept)) == 2
    assert not kept.exists()
