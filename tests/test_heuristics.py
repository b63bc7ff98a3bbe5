"""Every registered heuristic returns a feasible mask; each ranks channels as its paper says; the registry,
settings and random_search's equal-budget contract."""

import dataclasses
import functools

import numpy as np
import pytest
import torch
from torch import nn

from graphprune.errors import GraphpruneError
from graphprune.methods import MethodContext, available_methods, get_method
from graphprune.methods.base import (
    BudgetedEvaluator,
    EvaluationBudgetExhausted,
    counts_for_ratios,
    keep_top,
    largest_scaled_counts,
    remove_to_budget,
)
from graphprune.methods.importance import bn_gamma_scores, depgraph_scores, filter_l1_scores
from graphprune.models import ModelSpec, build_model
from graphprune.network.cost import CostModel, parse_target
from graphprune.network.pruning import ChannelGroups, Mask

RATIO_SEARCHES = ["random_search", "l1_ratio_search", "depgraph_ratio_search"]
HEURISTICS = ["random", "l1_uniform", "global_bn", "depgraph", *RATIO_SEARCHES]
TARGETS = ["flops0.5", "flops0.3", "params0.3"]
MODELS = {"resnet20-1x8": ModelSpec("resnet20", in_channels=1, input_size=8), "mobilenetv2": ModelSpec("mobilenetv2")}


def randomise_weights(model: nn.Module, seed: int) -> nn.Module:
    """Distinct BN gammas (fresh ones are all 1, which would make every ranking a tie)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.05, 1.5, generator=generator)
    return model.eval()


@functools.cache
def context_for(model_key: str, min_channels: int = 1) -> MethodContext:
    torch.manual_seed(0)
    spec = MODELS[model_key]
    model = randomise_weights(build_model(spec), seed=1)
    groups = ChannelGroups(model, spec.input_shape, min_channels)
    return MethodContext(model, groups, CostModel(model, groups), evaluator=lambda mask: sum(mask.counts), seed=3,
                         evaluations=3)


def assert_feasible(context: MethodContext, target: str, mask: Mask) -> None:
    context.groups.check(mask)  # fits, and keeps min_channels per group
    assert context.cost.meets(parse_target(target), mask.counts)
    assert min(mask.counts) >= context.groups.min_channels


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("model_key", MODELS)
@pytest.mark.parametrize("method", HEURISTICS)
def test_every_heuristic_meets_the_budget(method, model_key, target):
    context = context_for(model_key)
    result = get_method(method).search(context, parse_target(target))
    assert_feasible(context, target, result.mask)
    record = result.record
    assert record["method"] == method and record["target"] == target and record["notes"]
    assert record["search_seconds"] >= 0 and record["masks_evaluated"] == (3 if method in RATIO_SEARCHES else 0)
    metric = parse_target(target).metric
    assert record[f"{metric}_ratio"] == context.cost.ratio(metric, result.mask.counts) <= parse_target(target).ratio
    # Close to the budget, not far below it: each method spends what it is given.
    assert record[f"{metric}_ratio"] > parse_target(target).ratio - 0.06


@pytest.mark.parametrize("method", HEURISTICS)
def test_heuristics_keep_a_larger_minimum(method):
    context = context_for("resnet20-1x8", min_channels=4)
    result = get_method(method).search(context, parse_target("flops0.3"))
    assert_feasible(context, "flops0.3", result.mask)


def test_registry_lists_the_heuristics_and_refuses_unknown_names():
    assert set(HEURISTICS) <= set(available_methods())
    with pytest.raises(GraphpruneError, match=r"unknown pruning method 'l2_magic'; choose one of .*depgraph.*l1_uniform"):
        get_method("l2_magic")


def test_unknown_settings_and_impossible_budgets_are_user_errors():
    context = context_for("resnet20-1x8")
    with pytest.raises(GraphpruneError, match="unknown setting.*num_masks.*accepts: min_ratio"):
        get_method("random_search").search(context, parse_target("flops0.5"), {"num_masks": 3})
    with pytest.raises(GraphpruneError, match="accepts: none"):
        get_method("l1_uniform").search(context, parse_target("flops0.5"), {"min_ratio": 0.1})
    with pytest.raises(GraphpruneError, match="impossible.*at least"):
        get_method("global_bn").search(context, parse_target("flops0.001"))


def test_uniform_methods_use_one_ratio_and_l1_keeps_the_largest_filters():
    context = context_for("resnet20-1x8")
    budget = parse_target("flops0.5")
    l1_mask = get_method("l1_uniform").search(context, budget).mask
    random_mask = get_method("random").search(context, budget).mask
    assert l1_mask.counts == random_mask.counts  # same uniform ratio, different channels
    assert l1_mask != random_mask
    sizes = np.asarray(context.groups.sizes)
    # Counts round half up, so the one ratio shared by all groups is at least each group's (count - 0.5) / size.
    ratio = max((c - 0.5) / s for c, s in zip(l1_mask.counts, sizes, strict=True)) + 1e-9
    assert tuple(counts_for_ratios(sizes, np.full(len(sizes), ratio), context.cost.min_counts)) == l1_mask.counts
    for g, scores in enumerate(filter_l1_scores(context.model, context.groups)):
        kept, pruned = scores[list(l1_mask.kept[g])], scores[l1_mask.pruned(g)]
        assert pruned.size == 0 or kept.min() >= pruned.max()


def test_filter_l1_scores_sum_the_groups_writing_convs():
    model = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.ReLU(), nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -4.0, 2.0]).view(3, 1, 1, 1))
    groups = ChannelGroups(model, (1, 2, 2))
    first = next(g for g in groups.groups if g.root == "0")
    assert filter_l1_scores(model, groups)[first.index].tolist() == [1.0, 4.0, 2.0]


def test_global_bn_removes_the_smallest_gammas_and_stops_at_the_budget():
    context = context_for("resnet20-1x8")
    budget = parse_target("flops0.5")
    mask = get_method("global_bn").search(context, budget).mask
    scores = bn_gamma_scores(context.model, context.groups)
    removed = [(scores[g][i], g, i) for g in range(len(scores)) for i in mask.pruned(g)]
    largest_removed = max(removed)
    for g, kept in enumerate(mask.kept):
        for i in kept:  # every kept channel outranks every removed one, unless it is its group's last
            assert scores[g][i] >= largest_removed[0] or mask.counts[g] == context.groups.min_channels
    # Exact: putting back the last channel removed misses the budget again.
    _, g, i = largest_removed
    counts = list(mask.counts)
    counts[g] += 1
    assert not context.cost.meets(budget, counts)


def test_global_bn_gammas_are_the_batch_norm_weights():
    context = context_for("resnet20-1x8")
    modules = dict(context.model.named_modules())
    scores = bn_gamma_scores(context.model, context.groups)
    for group in context.groups.groups:
        bns = [m for m in group.members if m.kind == "out" and isinstance(modules[m.module], nn.BatchNorm2d)]
        if len(bns) == 1:  # a plain conv-BN group: the score is that BN's |gamma|
            gamma = modules[bns[0].module].weight.detach().abs().double().numpy()
            np.testing.assert_allclose(scores[group.index], gamma[[c[0] for c in bns[0].channels]])


def test_depgraph_scores_are_torch_pruning_group_importance():
    context = context_for("resnet20-1x8")
    scores = depgraph_scores(context.model, context.groups)
    assert [len(s) for s in scores] == list(context.groups.sizes)
    for s in scores:  # GroupMagnitudeImportance with the "mean" normaliser: each group averages to 1
        assert s.mean() == pytest.approx(1.0)
    mask = get_method("depgraph").search(context, parse_target("flops0.3")).mask
    removed_max = max(scores[g][i] for g in range(len(scores)) for i in mask.pruned(g))
    kept_min_free = [scores[g][i] for g in range(len(scores)) for i in mask.kept[g] if mask.counts[g] > 1]
    assert min(kept_min_free) >= removed_max


def test_random_methods_follow_the_seed():
    context = context_for("resnet20-1x8")
    budget = parse_target("flops0.5")
    first = get_method("random").search(context, budget).mask
    assert get_method("random").search(context, budget).mask == first
    other = MethodContext(context.model, context.groups, context.cost, seed=context.seed + 1)
    assert get_method("random").search(other, budget).mask != first


@pytest.mark.parametrize("method", RATIO_SEARCHES)
def test_ratio_searches_return_the_best_of_exactly_n_masks(method):
    context = context_for("resnet20-1x8")
    scored: list[tuple[float, Mask]] = []

    def toy_accuracy(mask: Mask) -> float:  # prefers masks that keep the first groups wide
        accuracy = float(np.dot(mask.counts, np.linspace(1.0, 0.0, len(mask.counts))))
        scored.append((accuracy, mask))
        return accuracy

    search_context = MethodContext(context.model, context.groups, context.cost, evaluator=toy_accuracy, seed=5,
                                   evaluations=7)
    result = get_method(method).search(search_context, parse_target("flops0.5"))
    assert len(scored) == 7 and result.record["masks_evaluated"] == 7 == result.record["evaluations"]
    best_accuracy, best_mask = max(scored, key=lambda item: item[0])
    assert result.mask == best_mask and result.record["best_search_top1"] == best_accuracy
    assert len({mask for _, mask in scored}) == 7  # distinct random per-group ratios
    l1 = filter_l1_scores(context.model, context.groups)
    for _, mask in scored:
        assert_feasible(search_context, "flops0.5", mask)
        if method == "l1_ratio_search":  # inside each group, the largest filters stay
            assert mask == keep_top(l1, mask.counts)
        if method == "depgraph_ratio_search":  # inside each group, the largest DepGraph importances stay
            assert mask == keep_top(depgraph_scores(context.model, context.groups), mask.counts)
    if method == "random_search":
        assert any(mask != keep_top(l1, mask.counts) for _, mask in scored)


def test_reselection_rescores_the_best_masks_on_held_out_images_within_the_evaluations():
    context = context_for("resnet20-1x8")
    search_scores: dict[Mask, float] = {}
    held_out_calls: list[Mask] = []

    def search_accuracy(mask: Mask) -> float:  # prefers masks that keep the first groups wide
        search_scores[mask] = float(np.dot(mask.counts, np.linspace(1.0, 0.0, len(mask.counts))))
        return search_scores[mask]

    def held_out_accuracy(mask: Mask) -> float:  # disagrees: prefers the last groups wide
        held_out_calls.append(mask)
        return float(np.dot(mask.counts, np.linspace(0.0, 1.0, len(mask.counts))))

    def pooled(mask: Mask) -> float:
        return 0.75 * search_scores[mask] + 0.25 * held_out_accuracy(mask)

    search_context = MethodContext(context.model, context.groups, context.cost, evaluator=search_accuracy, seed=5,
                                   evaluations=24, reselect=held_out_accuracy, reselect_candidates=3,
                                   reselect_weight=0.25)
    result = get_method("l1_ratio_search").search(search_context, parse_target("flops0.5"))
    assert len(search_scores) == 21 and len(held_out_calls) == 3  # 21 + 3 = the 24 evaluations
    assert result.record["masks_evaluated"] == 24
    finalists = sorted(search_scores, key=search_scores.get, reverse=True)[:3]
    assert set(held_out_calls) == set(finalists)
    assert result.mask == max(finalists, key=pooled)  # search and held-out images decide together
    assert result.record["reselect_top1"] == held_out_accuracy(result.mask)
    assert result.record["search_top1_max"] == max(search_scores.values())
    assert result.record["reselect_changed"] == (result.mask != finalists[0])

    # The default: one finalist, the search's own choice, scored once more on images it never saw.
    search_scores.clear()
    held_out_calls.clear()
    confirm = dataclasses.replace(search_context, reselect_candidates=1)
    confirmed = get_method("l1_ratio_search").search(confirm, parse_target("flops0.5"))
    assert len(search_scores) == 23 and held_out_calls == [confirmed.mask]
    assert confirmed.mask == max(search_scores, key=search_scores.get) and not confirmed.record["reselect_changed"]
    assert confirmed.record["reselect_top1"] == held_out_accuracy(confirmed.mask)

    tiny = MethodContext(context.model, context.groups, context.cost, evaluator=search_accuracy, evaluations=7,
                         reselect=held_out_accuracy, reselect_candidates=3)
    held_out_calls.clear()
    small = get_method("l1_ratio_search").search(tiny, parse_target("flops0.5"))  # 7 // 8 = 0 finalists
    assert not held_out_calls and "reselect_top1" not in small.record and small.record["masks_evaluated"] == 7
    one_shot = get_method("l1_uniform").search(search_context, parse_target("flops0.5"))
    assert "reselect_top1" not in one_shot.record  # only searches choose among scored masks


def test_budgeted_evaluator_counts_distinct_masks_and_stops_at_its_limit():
    context = context_for("resnet20-1x8")
    calls = []
    evaluator = BudgetedEvaluator(lambda mask: calls.append(mask) or 0.5, limit=2)
    full, uniform = context.groups.full_mask(), keep_top(filter_l1_scores(context.model, context.groups),
                                                         [max(1, s // 2) for s in context.groups.sizes])
    assert evaluator(full) == 0.5 and evaluator(full) == 0.5  # a repeat costs no evaluation
    assert evaluator.masks_evaluated == 1 and evaluator.remaining == 1 and not evaluator.exhausted
    evaluator(uniform)
    assert evaluator.exhausted and evaluator.masks_evaluated == 2
    evaluator(full)  # seen masks stay free once the budget is spent
    smaller = keep_top(filter_l1_scores(context.model, context.groups), [1] * len(context.groups.sizes))
    with pytest.raises(EvaluationBudgetExhausted):
        evaluator(smaller)
    assert evaluator.unmetered(smaller) == 0.5 and evaluator.masks_evaluated == 2  # diagnostics are not counted


def test_random_search_needs_an_evaluator():
    context = context_for("resnet20-1x8")
    no_data = MethodContext(context.model, context.groups, context.cost)
    with pytest.raises(GraphpruneError, match="needs a search evaluator"):
        get_method("random_search").search(no_data, parse_target("flops0.5"))


def test_remove_to_budget_leaves_a_feasible_mask_alone_and_keeps_the_best():
    context = context_for("resnet20-1x8")
    budget = parse_target("flops0.5")
    full = context.groups.full_mask()
    assert remove_to_budget(full, context.cost, parse_target("flops1.0"), [np.zeros(s) for s in full.sizes]) is full
    scores = [np.arange(s, dtype=float) for s in full.sizes]  # higher index = more important everywhere
    mask = remove_to_budget(full, context.cost, budget, scores, min_channels=1)
    assert context.cost.meets(budget, mask.counts)
    for g, kept in enumerate(mask.kept):
        assert kept == tuple(range(full.sizes[g] - len(kept), full.sizes[g]))  # the highest indices survive


def test_largest_scaled_counts_is_the_largest_uniform_ratio_meeting_the_budget():
    context = context_for("mobilenetv2")
    budget = parse_target("params0.3")
    sizes = np.asarray(context.groups.sizes)
    counts = largest_scaled_counts(context.cost, budget, np.ones(len(sizes)))
    assert context.cost.meets(budget, counts)
    # The smallest larger uniform ratio that keeps one more channel somewhere (counts round half up).
    next_ratio = min((c + 0.5) / s for c, s in zip(counts, sizes, strict=True) if c < s)
    larger = counts_for_ratios(sizes, np.full(len(sizes), next_ratio + 1e-9), context.cost.min_counts)
    assert (larger >= counts).all() and (larger > counts).any()
    assert not context.cost.meets(budget, larger)


@pytest.mark.parametrize("conv_groups", [1, 2, 8])
def test_input_slice_l1_reads_each_input_channels_own_weights(conv_groups):
    from graphprune.methods.importance import _input_slice_l1

    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, groups=conv_groups)
    per_group_in, per_group_out = 8 // conv_groups, 16 // conv_groups
    expected = [conv.weight[(i // per_group_in) * per_group_out:(i // per_group_in + 1) * per_group_out,
                            i % per_group_in].abs().mean() for i in range(8)]
    torch.testing.assert_close(_input_slice_l1(conv), torch.stack(expected).detach())
    linear = nn.Linear(8, 3)
    torch.testing.assert_close(_input_slice_l1(linear), linear.weight.abs().mean(0).detach())
