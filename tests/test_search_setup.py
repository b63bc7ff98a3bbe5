"""One builder assembles every search (`graphprune.search_setup`): the pipeline's search stage and
`graphprune.prune` draw their search images and calibration batches through it, so the same network, split and
seed give the same images, and the same method the same mask."""

import pytest
import torch

import graphprune
from graphprune import search_setup
from graphprune.checkpoint import load_model, save_model
from graphprune.config import load_config
from graphprune.data.splits import load_splits
from graphprune.errors import GraphpruneError
from graphprune.models import build_model
from graphprune.stages.search import load_setup, run_search


def test_the_stage_and_the_api_search_the_same_images_through_the_builder(config_with, tiny_section, monkeypatch):
    # The API draws no held-out images and caps its calibration batches at half the training split (16 here):
    # the experiment asks for the same, so both must draw the very same images.
    tiny_section.update(methods=["l1_ratio_search"], targets=["flops0.5"], search={
        "evaluations": 4, "reselect_candidates": 0, "calibration_batches": 2, "calibration_batch_size": 16})
    config = load_config(config_with({"tiny": tiny_section}))
    experiment = config.experiment("tiny")
    torch.manual_seed(0)
    save_model(config.paths("tiny").baseline_model(), build_model(experiment.model), experiment.model, {})
    drawn = []
    real = search_setup.build_search_evaluators
    monkeypatch.setattr(search_setup, "build_search_evaluators", lambda *a, **k: drawn.append(real(*a, **k)) or drawn[-1])

    stage = load_setup(config, experiment, "cpu", seed=5)
    record = run_search(config, stage, "l1_ratio_search", "flops0.5", seed=5)
    splits = load_splits(experiment.dataset)
    result = graphprune.prune(load_model(config.paths("tiny").baseline_model()).model,
                              torch.zeros(2, *experiment.model.input_shape), "flops0.5", "l1_ratio_search",
                              graphprune.PruneData(splits.train, splits.search), evaluations=4, seed=5,
                              latency_batch_sizes=())

    assert len(drawn) == 2  # one draw each, both through the builder
    (stage_evaluator, stage_held_out), (api_evaluator, api_held_out) = drawn
    assert stage_evaluator is stage.evaluator and stage_held_out is api_held_out is None
    assert torch.equal(stage_evaluator.labels, api_evaluator.labels)
    assert torch.equal(stage_evaluator.images, api_evaluator.images)
    assert all(torch.equal(a, b) for a, b in zip(stage_evaluator.calibration, api_evaluator.calibration, strict=True))
    assert record["kept_per_group"] == list(result.mask.counts)
    assert record["search_top1"] == result.metrics.search_top1


def test_a_misspelt_method_or_setting_fails_before_anything_is_traced(monkeypatch):
    monkeypatch.setattr(search_setup, "channel_groups", lambda *a: pytest.fail("traced before parsing"))
    with pytest.raises(GraphpruneError, match="unknown setting"):
        graphprune.prune(torch.nn.Conv2d(1, 2, 3), torch.zeros(2, 1, 8, 8), "flops0.5", "l1_ratio_search",
                         settings={"importanse": "filter_l1"})
    with pytest.raises(GraphpruneError):
        search_setup.parse_request("l1_ratio_serach", "flops0.5")
