import pytest

from graphprune.paths import ResultPaths, summary_csv, training_checkpoint


def test_paths_keep_snakemake_wildcards():
    paths = ResultPaths("results", "{experiment}")
    assert paths.mask("{method}", "{target}", "{seed}") == "results/{experiment}/{method}/{target}/seed{seed}/mask.pt"
    assert paths.baseline_model() == "results/{experiment}/baseline/model.pt"
    assert paths.log("pretrain") == "logs/{experiment}/pretrain.log"
    assert paths.log("search", "{method}", "{target}", "{seed}") == (
        "logs/{experiment}/{method}/{target}/seed{seed}/search.log")


def test_paths_of_one_experiment():
    paths = ResultPaths("out", "digits-resnet20")
    assert paths.baseline_metrics() == "out/digits-resnet20/baseline/metrics.json"
    assert paths.baseline_history() == "out/digits-resnet20/baseline/history.csv"
    assert paths.graph() == "out/digits-resnet20/graph.pt"
    assert paths.graph_summary() == "out/digits-resnet20/graph.json"
    assert paths.search_dir("gat_ppo", "flops0.5", 2) == "out/digits-resnet20/gat_ppo/flops0.5/seed2/search"
    assert paths.finetuned_metrics("gat_ppo", "flops0.5", 0) == (
        "out/digits-resnet20/gat_ppo/flops0.5/seed0/finetuned/metrics.json"
    )
    assert training_checkpoint(paths.baseline_dir()) == "out/digits-resnet20/baseline/last.pt"
    assert summary_csv("out") == "out/summary.csv"


def test_log_path_needs_method_target_and_seed():
    with pytest.raises(ValueError):
        ResultPaths("results", "x").log("search", method="gat_ppo")
    with pytest.raises(ValueError):
        ResultPaths("results", "x").log("search", method="gat_ppo", target="flops0.5")
