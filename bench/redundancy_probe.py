"""Does a pruning method find redundancy that weight magnitude cannot see? A planted-redundancy probe.

A trained ResNet (CIFAR-style BasicBlocks) gets free-to-remove channels planted in every block's inner
channels (conv1/bn1 outputs, read by conv2): a quarter of each block's channels, drawn by a seeded RNG among
the block's lower-L1 half (so the network's function changes least). Two kinds:
- `ignored`: conv1 filter x4 (bn1 running statistics scaled with it), conv2's weights reading the channel set
  to 0. The consumer ignores it, so removing it is free, but filter-magnitude methods see a LARGE filter.
- `dead`: conv1 filter x4, bn1 gamma and beta 0 (the channel is exactly 0 after BN), conv2's weights reading it
  x4. Removing it is free; producer and consumer weights both look large, only BN gamma shows it.
The planted network's BN statistics are then recalibrated on training images (the search's own calibration:
2 x 128 images, seed 0), as every pruned network's are: silencing a quarter of the inner channels shifts what
each bn2 sees, and stale statistics alone cost ~10 points of accuracy on digits. Before any pruning the script
checks, per kind, that the planted network's output equals that of the planted network with the planted
channels masked to zero (max |difference| <= 1e-5 on test images; exit 1 if not), and prints test top-1 of the
planted network (recalibrated, and before) beside the original's.
Then every method prunes the planted network at every target and seed (graphprune.prune, search on the train /
search splits; the test split is scored only here).

    .venv/bin/python bench/redundancy_probe.py               # digits ResNet-20, all defaults (long: 96 prunes)
    .venv/bin/python bench/redundancy_probe.py --methods l1_uniform l1_ratio_search gat_ppo --targets flops0.5 \
        --seeds 0 --evaluations 16                           # smoke run, about a minute
    .venv/bin/python bench/redundancy_probe.py --dataset fashion_mnist --baseline PATH/baseline/model.pt

The default baseline is written by
    .venv/bin/snakemake --cores all --configfile configs/selection-bias.yaml --replace-workflow-config \
        results/selection-bias/digits-max/baseline/model.pt

Output: a markdown table on stdout (mean ± std over seeds), per-run rows in --out (bench/out/redundancy_probe.csv)
and a bar plot beside it (.png). Columns:
  planted_pruned   share of the planted channels the method removed (1: found every free channel);
  chance           share of ALL channels of the same groups (the blocks' inner channels) it removed: what a
                   method blind to the planting removes of them on average. planted_pruned well above chance
                   means the method saw the redundancy; below chance means magnitude hid it;
  test_top1        test top-1 of the pruned network (BN statistics as the search scored its mask), no fine-tuning;
  search_top1      result.metrics.search_top1 (the chosen mask's score on the search split);
  flops_ratio      FLOPs kept; planted_test_top1 / original_test_top1: the unpruned planted (BN recalibrated) /
                   original network.
"""

from __future__ import annotations

import os
import sys

# A library import of this file (the unit test) must not switch numba's JIT: numba rereads the setting when it
# compiles, so the switch is only safe in a process of our own before numba is imported (as graphprune's CLI).
if __name__ == "__main__" and "numba" not in sys.modules:
    os.environ.setdefault("NUMBA_DISABLE_JIT", "1")  # skips a 9 s compile of Tianshou's helpers, same results

import argparse  # noqa: E402
import copy  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from torch import nn  # noqa: E402

import graphprune  # noqa: E402
from graphprune.checkpoint import load_model  # noqa: E402
from graphprune.config import dataset_settings, search_settings  # noqa: E402
from graphprune.data.splits import load_splits, make_loader  # noqa: E402
from graphprune.methods.importance import bn_gamma_scores, depgraph_scores, filter_l1_scores  # noqa: E402
from graphprune.models.cifar_resnet import BasicBlock  # noqa: E402
from graphprune.network.evaluate import evaluate, evaluation_mode, recalibrate_batch_norm  # noqa: E402
from graphprune.network.pruning import ChannelGroups, ChannelMasker, Mask  # noqa: E402
from graphprune.network.search_eval import calibration_images  # noqa: E402

DEFAULT_BASELINE = "results/selection-bias/digits-max/baseline/model.pt"
BASELINE_COMMAND = (".venv/bin/snakemake --cores all --configfile configs/selection-bias.yaml "
                    f"--replace-workflow-config {DEFAULT_BASELINE}")
KINDS = ("ignored", "dead")
PLANT_SHARE = 0.25  # of each block's inner channels
CANDIDATE_SHARE = 0.5  # planted channels are drawn among this lowest-L1 share of the block's inner channels
SCALE = 4.0
TOLERANCE = 1e-5  # max |planted - planted masked| on the check images
CHECK_IMAGES = 256
METHODS = ["l1_uniform", "depgraph", "global_bn", "l1_ratio_search", "depgraph_ratio_search", "gat_ppo",
           "gat_ppo_prior_only", "gat_ppo_no_prior"]
# Variants as configs/fashion-resnet20.yaml defines them: (registered method, its settings).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "gat_ppo_prior_only": ("gat_ppo", {"learn": False}),  # the untrained policy: what PPO adds
    "gat_ppo_no_prior": ("gat_ppo", {"policy": {"prior_strength": 0.0}}),  # no channel prior: what it adds
    # the filter-L1 prior (the default until 2026-12-06) instead of what a channel adds downstream
    "gat_ppo_l1_prior": ("gat_ppo", {"policy": {"prior_score": "filter_l1"}}),
    # the defaults of 2026-12-05 (filter-L1 prior, 64-state minibatches), as the tables of that day ran them
    "gat_ppo_20261205": ("gat_ppo", {"policy": {"prior_score": "filter_l1"}, "batch_size": 64}),
}


# ------------------------------------------------------------------------------------------------ planting


def inner_roots(model: nn.Module) -> list[str]:
    """Names of every BasicBlock's conv1: the root module of the block's inner channel group."""
    return [f"{name}.conv1" for name, module in model.named_modules() if isinstance(module, BasicBlock)]


def group_of_root(groups: ChannelGroups, roots: Sequence[str]) -> dict[str, int]:
    """root module name -> index of the channel group it is the root of."""
    index = {group.root: group.index for group in groups.groups}
    missing = [root for root in roots if root not in index]
    if missing:
        raise ValueError(f"no channel group has root {', '.join(missing)}: the inner channels are not prunable")
    return {root: index[root] for root in roots}


def plant(model: nn.Module, kind: str, seed: int = 0, share: float = PLANT_SHARE,
          scale: float = SCALE) -> tuple[nn.Module, dict[str, list[int]]]:
    """A planted deep copy of `model` (eval mode) and, per block conv1 name, its planted channel indices.

    The group rooted at a block's conv1 indexes conv1's own output channels, which bn1 and conv2's input use
    one to one, so one index list serves all three layers.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    planted_model = copy.deepcopy(model).eval()
    modules = dict(planted_model.named_modules())
    rng = np.random.default_rng(seed)
    planted: dict[str, list[int]] = {}
    roots = inner_roots(planted_model)
    if not roots:
        raise ValueError(f"{type(model).__name__} has no BasicBlock: the probe plants in ResNet blocks only")
    with torch.no_grad():
        for root in roots:
            block = modules[root.rsplit(".", 1)[0]]
            width = block.conv1.out_channels
            l1 = block.conv1.weight.abs().flatten(1).sum(1)
            candidates = torch.argsort(l1, stable=True)[: max(1, round(CANDIDATE_SHARE * width))].numpy()
            count = max(1, round(share * width))
            channels = sorted(int(i) for i in rng.choice(candidates, size=count, replace=False))
            idx = torch.tensor(channels)
            block.conv1.weight[idx] *= scale
            # bn1 normalises conv1's output, so its running statistics scale with it (mean x scale, variance
            # x scale^2): bn1's output stays what it was (up to eps) and the channel remains an ordinary live
            # activation. Gamma is left alone, so for `ignored` only the filter magnitude is inflated (global_bn
            # sees the channel's own trained gamma); `dead` then sets gamma and beta to 0 on purpose. (main()
            # recalibrates all BN statistics afterwards; this keeps plant() alone consistent too.)
            block.bn1.running_mean[idx] *= scale
            block.bn1.running_var[idx] *= scale**2
            if kind == "ignored":
                block.conv2.weight[:, idx] = 0.0
            else:
                block.bn1.weight[idx] = 0.0
                block.bn1.bias[idx] = 0.0
                block.conv2.weight[:, idx] *= scale
            planted[root] = channels
    return planted_model, planted


def planted_mask(groups: ChannelGroups, planted: Mapping[str, Sequence[int]]) -> Mask:
    """The mask that keeps every channel except the planted ones."""
    index = group_of_root(groups, list(planted))
    kept = [tuple(range(size)) for size in groups.sizes]
    for root, channels in planted.items():
        g, removed = index[root], set(channels)
        kept[g] = tuple(i for i in range(groups.sizes[g]) if i not in removed)
    return Mask(groups.sizes, tuple(kept))


def masked_difference(model: nn.Module, groups: ChannelGroups, mask: Mask, inputs: torch.Tensor) -> float:
    """max |model(inputs) - model with `mask` applied (inputs)|, in eval mode: 0 when the masked channels are
    free to remove."""
    with evaluation_mode(model), torch.no_grad():
        plain = model(inputs)
        with ChannelMasker(model, groups, mask):
            masked = model(inputs)
    return float((plain - masked).abs().max())


def top_share(scores: Sequence[np.ndarray], groups: ChannelGroups, planted: Mapping[str, Sequence[int]]) -> float:
    """Share of the planted channels that rank among their group's top len(planted) by `scores`: where a
    keep-the-largest ranking puts them (1: it keeps them all first)."""
    index = group_of_root(groups, list(planted))
    hits = total = 0
    for root, channels in planted.items():
        group_scores = scores[index[root]]
        top = set(np.argsort(-group_scores, kind="stable")[: len(channels)].tolist())
        hits += len(top & set(channels))
        total += len(channels)
    return hits / total


def planted_pruned(mask: Mask, groups: ChannelGroups, planted: Mapping[str, Sequence[int]]) -> tuple[float, float]:
    """(share of the planted channels `mask` prunes, share of all channels of the same groups it prunes)."""
    index = group_of_root(groups, list(planted))
    hits = total = pruned_all = size_all = 0
    for root, channels in planted.items():
        g = index[root]
        pruned = set(mask.pruned(g))
        hits += len(pruned & set(channels))
        total += len(channels)
        pruned_all += len(pruned)
        size_all += groups.sizes[g]
    return hits / total, pruned_all / size_all


# ------------------------------------------------------------------------------------------------- report


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    keys = ["method", "kind", "target"]
    values = ["planted_pruned", "chance", "test_top1", "search_top1"]
    grouped = runs.groupby(keys, sort=False)
    return pd.concat([grouped[values].mean(), grouped[values].std(ddof=1).add_suffix("_std"),
                      grouped.size().rename("n")], axis=1).reset_index()


def _cell(mean: float, std: float, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    text = fmt.format(scale * mean)
    return text if np.isnan(std) else f"{text} ± {fmt.format(scale * std)}"


def markdown_table(summary: pd.DataFrame) -> str:
    lines = ["| method | kind | target | n | planted pruned | chance | test top-1 % |", "|---|---|---|---|---|---|---|"]
    for row in summary.itertuples(index=False):
        lines.append(f"| {row.method} | {row.kind} | {row.target} | {row.n} | "
                     f"{_cell(row.planted_pruned, row.planted_pruned_std)} | {_cell(row.chance, row.chance_std)} | "
                     f"{_cell(row.test_top1, row.test_top1_std, 100)} |")
    return "\n".join(lines)


sns.set_theme(style="whitegrid", context="notebook")


def probe_figure(runs: pd.DataFrame) -> Figure:
    """Share of planted channels pruned per method (bars: mean over seeds, error bars: std), hue = kind, one
    panel per target; a black dash on each bar marks its chance (share of all inner channels pruned)."""
    targets = list(dict.fromkeys(runs["target"]))
    methods = list(dict.fromkeys(runs["method"]))
    kinds = list(dict.fromkeys(runs["kind"]))
    chance = runs.groupby(["target", "method", "kind"])["chance"].mean()
    figure_ = Figure(figsize=(max(6.0, 0.8 * len(methods) * len(kinds) + 1.5) * len(targets), 5.0),
                     layout="constrained")
    axes = figure_.subplots(1, len(targets), squeeze=False, sharey=True)[0]
    for ax, target in zip(axes, targets, strict=True):
        panel = runs[runs["target"] == target]
        sns.barplot(panel, x="method", y="planted_pruned", hue="kind", order=methods, hue_order=kinds,
                    errorbar="sd", capsize=0.15, ax=ax)
        # seaborn draws one BarContainer per hue level, its bars in `order`.
        for kind, bars in zip(kinds, ax.containers, strict=False):
            for method, bar in zip(methods, bars, strict=False):
                if (target, method, kind) in chance.index:
                    ax.plot([bar.get_x() + bar.get_width() / 2], [chance[(target, method, kind)]], marker="_",
                            markersize=16, markeredgewidth=2.5, color="black", linestyle="none")
        ax.set(title=target, xlabel="", ylabel="planted channels pruned (share)", ylim=(0, 1.05))
        ax.tick_params(axis="x", labelrotation=40)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
        handles, labels = ax.get_legend_handles_labels()
        ax.get_legend().remove()
    handles.append(Line2D([], [], marker="_", markersize=16, markeredgewidth=2.5, color="black", linestyle="none"))
    labels.append("chance (all inner channels)")
    axes[-1].legend(handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure_


# ------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None, help=f"save_model file (default for digits: {DEFAULT_BASELINE})")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--targets", nargs="+", default=["flops0.5", "flops0.3"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--evaluations", type=int, default=512, help="distinct masks a search method may score")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--plant-seed", type=int, default=0, help="draws the planted channels (same for all runs)")
    parser.add_argument("--out", default="bench/out/redundancy_probe.csv", help="per-run CSV; the .png goes beside it")
    args = parser.parse_args(argv)

    if args.baseline is None and args.dataset != "digits":
        print(f"give --baseline: the default {DEFAULT_BASELINE} is a digits model", file=sys.stderr)
        return 2
    baseline = Path(args.baseline or DEFAULT_BASELINE)
    if not baseline.is_file():
        print(f"no baseline at {baseline}; the default one is written by: {BASELINE_COMMAND}", file=sys.stderr)
        return 2
    checkpoint = load_model(baseline)
    model, spec = checkpoint.model, checkpoint.spec
    splits = load_splits(dataset_settings({"name": args.dataset}))
    if tuple(splits.info.input_shape) != tuple(spec.input_shape):
        print(f"{baseline} takes {spec.input_shape} inputs, {args.dataset} images are {splits.info.input_shape}",
              file=sys.stderr)
        return 2
    test_loader = make_loader(splits.test, 256)
    check_images = torch.stack([splits.test[i][0] for i in range(min(CHECK_IMAGES, len(splits.test)))])
    original_top1 = evaluate(model, test_loader, "cpu")["top1"]
    defaults = search_settings({})
    calibration = calibration_images(splits.train, defaults["calibration_batches"],
                                     defaults["calibration_batch_size"], seed=0, device="cpu")
    print(f"baseline {baseline} ({spec.name}, {args.dataset}): test top-1 {100 * original_top1:.2f} %")

    planted_models: dict[str, tuple[nn.Module, dict[str, list[int]], float]] = {}
    failed = False
    for kind in args.kinds:
        planted_model, planted = plant(model, kind, args.plant_seed)
        stale_top1 = evaluate(planted_model, test_loader, "cpu")["top1"]
        recalibrate_batch_norm(planted_model, calibration)
        groups = ChannelGroups(planted_model, spec.input_shape)
        difference = masked_difference(planted_model, groups, planted_mask(groups, planted), check_images)
        planted_top1 = evaluate(planted_model, test_loader, "cpu")["top1"]
        channels = sum(len(c) for c in planted.values())
        inner = sum(groups.sizes[g] for g in group_of_root(groups, list(planted)).values())
        ranks = {name: top_share(scores(planted_model, groups), groups, planted) for name, scores in
                 (("filter L1", filter_l1_scores), ("BN |gamma|", bn_gamma_scores), ("DepGraph", depgraph_scores))}
        ok = difference <= TOLERANCE
        failed |= not ok
        print(f"{kind}: {channels} of {inner} inner channels planted in {len(planted)} blocks; max |planted - "
              f"planted masked| {difference:.2e} ({'ok' if ok else 'FAILED'}, tolerance {TOLERANCE:g}); test top-1 "
              f"{100 * planted_top1:.2f} % planted ({100 * stale_top1:.2f} % before BN recalibration) vs "
              f"{100 * original_top1:.2f} % original; planted channels among "
              "their group's largest (keep-first) by " + ", ".join(f"{n} {s:.2f}" for n, s in ranks.items()))
        planted_models[kind] = (planted_model, planted, planted_top1)
    if failed:
        print("the planted channels are not free to remove: the probe would measure nothing", file=sys.stderr)
        return 1

    data = graphprune.PruneData(splits.train, splits.search)
    example = torch.zeros(2, *spec.input_shape)
    rows = []
    for kind, (planted_model, planted, planted_top1) in planted_models.items():
        for method in args.methods:
            base, settings = VARIANTS.get(method, (method, None))
            for target in args.targets:
                for seed in args.seeds:
                    result = graphprune.prune(planted_model, example, target=target, method=base, data=data,
                                              settings=settings, evaluations=args.evaluations, seed=seed,
                                              latency_batch_sizes=())
                    share, chance = planted_pruned(result.mask, result.groups, planted)
                    rows.append({
                        "dataset": args.dataset, "kind": kind, "method": method, "target": target, "seed": seed,
                        "planted_pruned": share, "chance": chance,
                        "test_top1": evaluate(result.model, test_loader, "cpu")["top1"],
                        "search_top1": result.metrics.search_top1, "flops_ratio": result.metrics.flops_ratio,
                        "masks_evaluated": result.metrics.masks_evaluated,
                        "search_seconds": result.metrics.search_seconds,
                        "planted_test_top1": planted_top1, "original_test_top1": original_top1,
                    })
                    print(pd.DataFrame(rows[-1:]).round(4).to_string(index=False, header=len(rows) == 1), flush=True)

    runs = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out, index=False)
    print("\n" + markdown_table(summarize(runs)))
    figure_path = out.with_suffix(".png")
    probe_figure(runs).savefig(figure_path, dpi=120)
    print(f"\nper-run rows: {out}; figure: {figure_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
