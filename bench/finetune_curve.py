"""Where does a better mask's lead live? Test top-1 against fine-tuning images, per method (issue 23, item 7).

    .venv/bin/python bench/finetune_curve.py [--config configs/fashion-resnet20.yaml] [--experiment fashion-resnet20]
        [--methods gat_ppo depgraph] [--target flops0.3] [--seeds 0] [--out docs/figures/finetune_curve.png]

Reads the masks `make bench` chose (run it first) and, for each method and seed, fine-tunes the pruned network
(BN recalibrated as its search scored it, as the finetune stage does) from scratch for each budget of fine-tuning
images, with the experiment's own recipe except its length: none, a few hundred images, a few thousand, the
recipe itself (its epochs x images_per_epoch), and 2.5x the recipe. Prints the test top-1 at each budget and the
difference between the first method and each other; writes a CSV beside the figure. Fine-tuning is seeded by
the search seed, like the pipeline's, so the recipe's point reproduces the finetune stage's test top-1.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import matplotlib
import pandas as pd

from graphprune.config import load_config
from graphprune.data.splits import make_loader
from graphprune.network.evaluate import evaluate
from graphprune.stages.finetune import pruned_baseline
from graphprune.train import train

matplotlib.use("Agg")

# Fine-tuning lengths as (epochs, images per epoch); None = the recipe's own images per epoch.
SHORT = ((1, 250), (1, 1000), (1, 3000))


def lengths(recipe, train_images: int) -> list[tuple[int, int]]:
    """(epochs, images per epoch): none, short single epochs, the recipe, and 2.5 times the recipe's epochs;
    short ones that would not be shorter than the recipe's first epoch are left out."""
    per_epoch = min(recipe.images_per_epoch or train_images, train_images)
    longer = max(recipe.epochs + 1, round(2.5 * recipe.epochs))
    short = [(epochs, images) for epochs, images in SHORT if images < per_epoch]
    return [(0, 0), *short, (recipe.epochs, per_epoch), (longer, per_epoch)]


def curve(config, experiment, method: str, target: str, seed: int) -> list[dict]:
    rows = []
    train_images = len(pruned_baseline(config, experiment, method, target, seed).splits.train)
    for epochs, per_epoch in lengths(experiment.finetune, train_images):
        network = pruned_baseline(config, experiment, method, target, seed)  # fresh from the mask for every length
        test = make_loader(network.splits.test, experiment.finetune.batch_size)
        if epochs:
            recipe = dataclasses.replace(experiment.finetune, epochs=epochs, images_per_epoch=per_epoch)
            with tempfile.TemporaryDirectory() as run_dir:
                train(network.pruned, recipe, network.splits.train, network.splits.search, run_dir=run_dir,
                      seed=seed, config_hash=f"curve-{method}-{epochs}-{per_epoch}", device=network.device)
        top1 = evaluate(network.pruned, test, network.device)["top1"]
        images = epochs * per_epoch
        rows.append({"method": method, "seed": seed, "epochs": epochs, "images": images, "test_top1": 100 * top1})
        print(f"{method:24s} seed {seed}  {images:6d} images ({epochs} epochs)  test top-1 {100 * top1:6.2f} %",
              flush=True)
    return rows


def plot(frame: pd.DataFrame, recipe_images: int, title: str, out: Path) -> None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    shown = frame.assign(images=frame.images.clip(lower=100))  # none (0 images) drawn at the left edge
    axis = sns.lineplot(shown, x="images", y="test_top1", hue="method", marker="o", errorbar="sd")
    axis.set_xscale("log")
    axis.axvline(recipe_images, color="grey", linestyle=":", label="the pipeline's recipe")
    axis.set(xlabel="fine-tuning images (none at the left edge, log scale)", ylabel="test top-1 %", title=title)
    axis.legend()
    out.parent.mkdir(parents=True, exist_ok=True)
    plt.tight_layout()
    plt.savefig(out, dpi=110)
    plt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/fashion-resnet20.yaml")
    parser.add_argument("--experiment", default="fashion-resnet20")
    parser.add_argument("--methods", nargs="+", default=["gat_ppo", "depgraph"])
    parser.add_argument("--target", default="flops0.3")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("docs/figures/finetune_curve.png"))
    args = parser.parse_args()
    config = load_config(args.config)
    experiment = config.experiment(args.experiment)
    frame = pd.DataFrame([row for method in args.methods for seed in args.seeds
                          for row in curve(config, experiment, method, args.target, seed)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out.with_suffix(".csv"), index=False)
    table = frame.groupby(["images", "method"]).test_top1.agg(["mean", "std"]).unstack("method")
    print(f"\ntest top-1 % (mean over seeds {args.seeds}) by fine-tuning images\n{table.round(2).to_string()}")
    means = frame.groupby(["images", "method"]).test_top1.mean().unstack("method")
    first = args.methods[0]
    for other in args.methods[1:]:
        print(f"\n{first} minus {other} (points):\n{(means[first] - means[other]).round(2).to_string()}")
    recipe_images = int(frame[frame.epochs == experiment.finetune.epochs].images.max())  # short runs: fewer
    plot(frame, recipe_images, f"{args.experiment} {args.target}: test top-1 against fine-tuning", args.out)
    print(f"\nfigure: {args.out}; data: {args.out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
