"""Which final-choice rule picks better masks and reports them honestly? A simulation of a search's last step.

    .venv/bin/python bench/selection_rules.py [--masks 512] [--images 300] [--held-out 100] [--trials 2000]

A search scores `--masks` masks, each with a true accuracy, on a finite set of search images: every score is a
binomial draw around the truth (the digits search split has 300 images, so one score's standard error is about
2 points at 85 %). Rules for the final choice, with the same images in all:

- max: the best search score over all `--images` (what searches did before issue 23);
- confirm: the best search score over `images - held_out`, then scored once on `--held-out` unseen images;
- top-K by held-out: the K best by search score, the best on the held-out images wins (issue 23's first try);
- top-K by pooled: the K best by search score, the best by pooled search + held-out score wins.

Per rule: the true accuracy of the chosen mask (what test top-1 estimates) and the bias of the score the rule
reports (reported minus true; pooled rules report the held-out score). Scenarios: true accuracies of the scored
masks ~ Normal(mean, sd) (a broad random search, a late search near its optimum). Mean over trials, and the
standard error of that mean.
"""

from __future__ import annotations

import argparse

import numpy as np

SCENARIOS = {"broad search (70 ± 10 %)": (0.70, 0.10), "focused search (80 ± 5 %)": (0.80, 0.05),
             "late search (85 ± 3 %)": (0.85, 0.03)}


def simulate(mean: float, sd: float, args: argparse.Namespace, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """rule -> array [trials, 2] of (true accuracy of the chosen mask, reported minus true)."""
    search_images = args.images - args.held_out
    weight = args.held_out / args.images
    rows: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.trials):
        true = np.clip(rng.normal(mean, sd, args.masks), 0.02, 0.98)
        all_images = rng.binomial(args.images, true) / args.images
        searched = rng.binomial(search_images, true) / search_images  # disjoint images: independent draws
        held_out = rng.binomial(args.held_out, true) / args.held_out
        pooled = (1 - weight) * searched + weight * held_out

        chosen = {"max (all images)": (int(all_images.argmax()), all_images),
                  "confirm (1 finalist)": (int(searched.argmax()), held_out)}
        for k in args.finalists:
            top = np.argsort(-searched)[:k]
            chosen[f"top-{k} by held-out"] = (top[held_out[top].argmax()], held_out)
            chosen[f"top-{k} by pooled"] = (top[pooled[top].argmax()], held_out)
        for rule, (index, reported) in chosen.items():
            rows.setdefault(rule, []).append((true[index], reported[index] - true[index]))
    return {rule: np.array(values) for rule, values in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--masks", type=int, default=512)
    parser.add_argument("--images", type=int, default=300, help="search-split images in all")
    parser.add_argument("--held-out", type=int, default=100, help="of them kept for the final rescoring")
    parser.add_argument("--finalists", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{args.masks} masks, {args.images} search-split images ({args.held_out} held out), {args.trials} trials")
    for scenario, (mean, sd) in SCENARIOS.items():
        print(f"\n{scenario}\n| rule | true top-1 of chosen % | reported − true (pp) |\n|---|---|---|")
        for rule, values in simulate(mean, sd, args, rng).items():
            avg, err = 100 * values.mean(axis=0), 100 * values.std(axis=0) / np.sqrt(len(values))
            print(f"| {rule} | {avg[0]:.2f} ± {err[0]:.2f} | {avg[1]:+.2f} ± {err[1]:.2f} |")


if __name__ == "__main__":
    main()
