"""The RL baselines `gnnrl` (GNN-RL) and `amc` (AMC): feasible masks, the states and actions docs/BASELINES.md
describes, the feasibility wall, the reward definitions, and reproducible seeds. ResNet-20 at 1x8x8 with random
weights and a toy evaluator (a deterministic function of the mask), a few episodes each."""

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from graphprune.errors import GraphpruneError
from graphprune.methods import MethodContext, available_methods, get_method
from graphprune.methods.amc import (
    STATE_FEATURES,
    STATIC_FEATURES,
    AmcSettings,
    LayerwiseEnv,
    static_group_features,
    truncated_normal,
)
from graphprune.methods.gnnrl import (
    GnnRlSettings,
    GroupRatiosActor,
    MultiStageEncoder,
    RatioEnv,
    build_hierarchy,
    fixed_std_gaussian,
)
from graphprune.methods.importance import filter_l1_scores, filter_l2_scores
from graphprune.methods.rl_common import ScoredMasks, seeded_global_rngs
from graphprune.models import ModelSpec, build_model
from graphprune.network.cost import CostModel, parse_target
from graphprune.network.graph import topological_group_order, trace_layers
from graphprune.network.pruning import ChannelGroups, Mask

SPEC = ModelSpec("resnet20", in_channels=1, input_size=8)
TARGETS = ["flops0.5", "flops0.3"]
# A few episodes only; small update periods and minibatches so that learning steps happen at all.
FAST_SETTINGS = {
    "gnnrl": {"update_every_steps": 8, "update_epochs": 2},
    "amc": {"warmup_episodes": 2, "batch_size": 8, "hidden": 32},
}
EVALUATIONS = 6  # distinct masks each search may score


def toy_accuracy(mask: Mask) -> float:
    """In (0, 1]: rises with every kept channel, more for narrow groups (so allocation matters)."""
    return float(np.mean([math.sqrt(c / s) for c, s in zip(mask.counts, mask.sizes, strict=True)]))


@functools.cache
def context(seed: int = 3) -> MethodContext:
    torch.manual_seed(0)
    model = build_model(SPEC).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # distinct BN gammas and filters, so rankings are not ties
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.05, 1.5, generator=generator)
    groups = ChannelGroups(model, SPEC.input_shape)
    return MethodContext(model, groups, CostModel(model, groups), evaluator=toy_accuracy, seed=seed,
                         evaluations=EVALUATIONS)


def assert_feasible(ctx: MethodContext, target: str, mask: Mask) -> None:
    ctx.groups.check(mask)
    assert ctx.cost.meets(parse_target(target), mask.counts)


# ------------------------------------------------------------------------------------------------ both


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("method", ["gnnrl", "amc"])
def test_rl_baselines_return_feasible_masks_with_their_record(method, target):
    ctx = context()
    result = get_method(method).search(ctx, parse_target(target), FAST_SETTINGS[method])
    assert_feasible(ctx, target, result.mask)
    record = result.record
    assert record["method"] == method and record["notes"]
    assert record["masks_evaluated"] == EVALUATIONS == record["evaluations"]  # the equal search budget, exactly
    assert record["episodes"] >= EVALUATIONS
    assert record["best_search_top1"] == toy_accuracy(result.mask)
    assert record["flops_ratio"] <= parse_target(target).ratio


def test_registry_lists_the_rl_baselines_and_they_need_an_evaluator():
    assert {"gnnrl", "amc"} <= set(available_methods())
    ctx = context()
    blind = MethodContext(ctx.model, ctx.groups, ctx.cost, evaluator=None)
    for method in ("gnnrl", "amc"):
        with pytest.raises(GraphpruneError, match="needs a search evaluator"):
            get_method(method).search(blind, parse_target("flops0.5"))


@pytest.mark.parametrize("method", ["gnnrl", "amc"])
def test_the_same_seed_gives_the_same_mask_and_leaves_global_rngs_alone(method):
    ctx = context()
    torch.manual_seed(11)
    np.random.seed(11)
    expected_torch, expected_numpy = torch.rand(3), np.random.rand(3)
    torch.manual_seed(11)
    np.random.seed(11)
    first = get_method(method).search(ctx, parse_target("flops0.3"), FAST_SETTINGS[method])
    assert torch.equal(torch.rand(3), expected_torch) and np.array_equal(np.random.rand(3), expected_numpy)
    second = get_method(method).search(ctx, parse_target("flops0.3"), FAST_SETTINGS[method])
    assert first.mask == second.mask
    for key in ("episodes", "masks_evaluated", "best_search_top1", "best_keep_ratios"):
        assert first.record[key] == second.record[key]


def test_scored_masks_refuse_over_budget_counts_and_keep_the_best():
    ctx = context()
    budget = parse_target("flops0.5")
    masks = ScoredMasks(ctx.cost, budget, filter_l1_scores(ctx.model, ctx.groups), toy_accuracy)
    with pytest.raises(ValueError, match="exceed the budget"):
        masks.score(ctx.groups.sizes)
    half = [s // 2 for s in ctx.groups.sizes]
    assert masks.score(half) == masks.score(half) == masks.best_accuracy
    assert len(masks.accuracies) == 2 and masks.best_mask == masks.mask(half) and not masks.exhausted


def test_seeded_scope_restores_the_caller_streams():
    torch.manual_seed(5)
    np.random.seed(5)
    with seeded_global_rngs(0):
        inside = torch.rand(2), np.random.rand(2)
    after = torch.rand(2), np.random.rand(2)
    torch.manual_seed(5)
    np.random.seed(5)
    assert torch.equal(after[0], torch.rand(2)) and np.array_equal(after[1], np.random.rand(2))
    with seeded_global_rngs(0):
        assert torch.equal(torch.rand(2), inside[0]) and np.array_equal(np.random.rand(2), inside[1])


# ----------------------------------------------------------------------------------------------- gnnrl


def test_gnnrl_hierarchy_has_every_layer_once_and_one_node_per_group():
    ctx = context()
    hierarchy = build_hierarchy(ctx.model, ctx.groups)
    trace = trace_layers(ctx.model, SPEC.input_shape)
    num_layers, num_groups = len(trace.names), len(ctx.groups)
    assert hierarchy.layer_names == tuple(trace.names)
    assert hierarchy.layer_features.shape == (num_layers, 16)
    assert hierarchy.layer_edges.shape[1] == 2 * trace.edges.shape[1]  # data flow, both directions
    assert hierarchy.layer_group.shape == (num_layers,)
    assert set(hierarchy.layer_group.tolist()) == set(range(num_groups))  # no empty level-2 node
    position = {name: i for i, name in enumerate(trace.names)}
    for group in ctx.groups.groups:  # a layer writing a group's channels belongs to that group
        assert all(hierarchy.layer_group[position[m]] == group.index for m in group.out_modules)
    rows = hierarchy.layer_input_groups.sum(1)
    assert torch.allclose(rows[1:], torch.ones(num_layers - 1)) and rows[0] == 0  # only the input layer reads the image
    edges = set(map(tuple, hierarchy.group_edges.t().tolist()))
    assert edges and all((b, a) in edges and a != b and 0 <= a < num_groups for a, b in edges)


def test_gnnrl_policy_is_a_fixed_std_gaussian_with_one_ratio_per_group():
    ctx = context()
    settings = GnnRlSettings()
    hierarchy = build_hierarchy(ctx.model, ctx.groups)
    num_groups = len(ctx.groups)
    actor = GroupRatiosActor(MultiStageEncoder(hierarchy, settings.hidden, settings.embedding), settings)
    obs = np.concatenate([np.random.default_rng(0).uniform(0.1, 1, (4, num_groups)), np.full((4, 1), 0.2)], axis=1)
    (mean, std), _ = actor(obs)
    assert mean.shape == std.shape == (4, num_groups)
    assert (mean.abs() < 1).all() and torch.all(std == 0.5)
    distribution = fixed_std_gaussian((mean, std))
    assert distribution.sample().shape == (4, num_groups) and distribution.log_prob(mean).shape == (4,)
    assert torch.allclose(distribution.stddev, torch.full((4, num_groups), 0.5))


def test_gnnrl_episode_steps_rewards_and_clipping():
    ctx = context()
    settings = GnnRlSettings()
    budget = parse_target("flops0.5")
    masks = ScoredMasks(ctx.cost, budget, filter_l2_scores(ctx.model, ctx.groups), toy_accuracy)
    env = RatioEnv(ctx.cost, budget, masks, settings)
    num_groups = len(ctx.groups)
    obs, _ = env.reset()
    assert obs.shape == (num_groups + 1,) and np.all(obs[:-1] == 1) and obs[-1] == 0
    # Negative actions prune nothing (a is clipped to [0, 1]); after max_steps without meeting: -100.
    for step in range(1, settings.max_steps + 1):
        obs, reward, terminated, truncated, _ = env.step(np.full(num_groups, -0.7))
        assert np.all(obs[:-1] == 1) and obs[-1] == pytest.approx(step / settings.max_steps)
        assert terminated == (step == settings.max_steps) and not truncated
    assert reward == -100.0 and env.episodes == 1 and env.episodes_meeting_budget == 0 and masks.best_mask is None
    # Each step multiplies by 1 - a; kept fractions never fall below min_keep; met budget ends the episode.
    env.reset()
    obs, reward, terminated, _, _ = env.step(np.full(num_groups, 0.25))
    assert np.allclose(obs[:-1], 0.75) and not terminated and reward == 0
    obs, reward, terminated, _, _ = env.step(np.full(num_groups, 5.0))
    assert np.allclose(obs[:-1], settings.min_keep) and terminated
    assert reward == pytest.approx(100 * toy_accuracy(masks.best_mask) - 100)
    assert env.episodes == 2 and env.episodes_meeting_budget == 1


def test_gnnrl_episodes_last_at_most_max_steps():
    result = get_method("gnnrl").search(context(), parse_target("flops0.5"), FAST_SETTINGS["gnnrl"])
    record = result.record
    assert record["episodes"] <= record["steps"] <= 5 * record["episodes"] + 5  # + a part-collected episode
    assert record["ppo_updates"] == -(-record["steps"] // FAST_SETTINGS["gnnrl"]["update_every_steps"])


def test_gnnrl_falls_back_to_scaled_ratios_when_no_episode_meets_the_budget():
    ctx = context()
    result = get_method("gnnrl").search(ctx, parse_target("flops0.3"), {**FAST_SETTINGS["gnnrl"], "min_keep": 1.0})
    assert_feasible(ctx, "flops0.3", result.mask)
    assert result.record["episodes_meeting_budget"] == 0 and result.record["masks_evaluated"] == 1
    assert "scaled down" in result.record["notes"]


def test_l2_filter_scores_are_the_norm_of_the_root_filters_for_a_plain_group():
    ctx = context()
    group = next(g for g in ctx.groups.groups if g.root == "layer1.0.conv1")
    weight = dict(ctx.model.named_modules())[group.root].weight.detach().double()
    expected = weight.flatten(1).norm(dim=1).numpy()
    assert np.allclose(filter_l2_scores(ctx.model, ctx.groups)[group.index], expected)


# ------------------------------------------------------------------------------------------------- amc


def amc_env(target: str, **settings) -> tuple[LayerwiseEnv, list[int]]:
    ctx = context()
    budget = parse_target(target)
    order = topological_group_order(ctx.groups.roots, trace_layers(ctx.model, SPEC.input_shape).names)
    static = static_group_features(ctx.model, ctx.groups, ctx.cost, budget.metric, order)
    masks = ScoredMasks(ctx.cost, budget, filter_l1_scores(ctx.model, ctx.groups), toy_accuracy)
    return LayerwiseEnv(static, order, ctx.cost, budget, masks, AmcSettings(**settings)), order


def test_amc_state_is_the_min_max_normalised_layer_embedding():
    env, order = amc_env("flops0.5")
    num_groups = len(order)
    assert sorted(order) == list(range(num_groups)) and order[0] == 2  # the stem conv's group comes first
    assert env.static.shape == (num_groups, len(STATIC_FEATURES)) and len(STATE_FEATURES) == 10
    for column in env.static.T:  # each static column spans [0, 1] exactly, or is constant 0
        assert (column.min(), column.max()) in ((0.0, 1.0), (0.0, 0.0))
    assert np.allclose(env.static[:, 0], np.arange(num_groups) / (num_groups - 1))  # index
    obs, _ = env.reset()
    assert obs.shape == (10,) and np.all((obs >= 0) & (obs <= 1))
    reduced, rest, previous = obs[7:]
    assert reduced == 0 and 0 < rest < 1 and previous == 1
    obs, *_ = env.step(np.array([0.5]))
    assert obs[9] == pytest.approx(env.counts[order[0]] / env.sizes[order[0]]) and obs[7] > 0
    assert np.array_equal(obs[:7], env.static[1].astype(np.float32))


@pytest.mark.parametrize("target", TARGETS)
def test_amc_actions_respect_the_lower_bound_and_the_wall_meets_the_budget(target):
    # Greedy actions (keep everything) must be cut by the wall; random ones stay above the lower bound.
    for greedy, actions in ((True, np.ones(64)), (False, np.random.default_rng(0).uniform(-0.5, 1.5, 64))):
        env, order = amc_env(target)
        env.reset()
        for step in range(len(order)):
            _, reward, terminated, _, info = env.step(np.array([actions[step]]))
        assert terminated and reward == info["search_top1"] == toy_accuracy(env.masks.mask(env.counts))
        assert env.cost.meets(parse_target(target), env.counts)  # no repair anywhere
        assert np.all(env.counts >= np.floor(0.2 * env.sizes + 0.5)) and not env.lower_bound_relaxed
        if greedy:
            assert env.walled_steps > 0


def test_amc_wall_keeps_the_most_channels_the_budget_allows_for_the_last_group():
    env, order = amc_env("flops0.3")
    env.reset()
    for _ in order:
        env.step(np.array([1.0]))
    last = order[-1]
    over = env.counts.copy()
    over[last] += 1
    assert env.counts[last] == env.sizes[last] or not env.cost.meets(parse_target("flops0.3"), over)


def test_amc_relaxes_the_lower_bound_when_the_budget_needs_it():
    env, order = amc_env("flops0.02")  # below every group at 20% of its channels
    assert env.lower_bound_relaxed
    env.reset()
    for _ in order:
        env.step(np.array([1.0]))
    assert env.cost.meets(parse_target("flops0.02"), env.counts)


def test_amc_log_flops_reward():
    env, order = amc_env("flops0.5", reward="acc_log_flops")
    env.reset()
    for _ in order:
        _, reward, *_ = env.step(np.array([0.6]))
    accuracy = toy_accuracy(env.masks.mask(env.counts))
    assert reward == pytest.approx(-(1 - accuracy) * math.log(env.cost.flops(env.counts)))


def test_truncated_normal_stays_in_bounds_and_centres_on_the_mean():
    rng = np.random.default_rng(0)
    draws = np.array([truncated_normal(0.6, 0.1, 0.2, 1.0, rng) for _ in range(2000)])
    assert draws.min() >= 0.2 and draws.max() <= 1.0 and abs(draws.mean() - 0.6) < 0.01
    assert truncated_normal(-5.0, 1e-3, 0.2, 1.0, rng) == 0.2  # mean far below: the bound itself


def test_amc_and_gnnrl_settings_reject_nonsense():
    with pytest.raises(GraphpruneError, match="warmup_episodes"):
        AmcSettings(warmup_episodes=-1)
    with pytest.raises(GraphpruneError, match="reward must be one of acc, acc_log_flops"):
        AmcSettings(reward="latency")
    with pytest.raises(GraphpruneError, match="min_keep"):
        GnnRlSettings(min_keep=0.0)
