"""Predicted vs measured latency ratio of randomly pruned networks (`LatencyModel`, issue 12 deliverable 4).

For each case (model, batch size): build the latency table (timed, not read from a cache), then for random
feasible masks (keep ratio per group uniform in [0.3, 1.0]) compare the predicted latency ratio with the
measured one of the physically pruned network, timed side by side with the unpruned network in one run
(`measure_latency`'s procedure: warm-up, then alternating runs, medians; wall clock and thread CPU time read
around the same runs), 1 torch thread throughout. Errors are |predicted - measured| / measured against the
wall-clock ratio (the issue's measure; err_cpu_*: against the CPU-time ratio), for each remainder treatment
of `LatencyModel` (the default is "fitted") and, for scale, for the FLOPs ratio used as a latency
prediction. paired_iqr: interquartile range of the per-round ratios (pruned run / unpruned run of the same
round) over their median, the measurement's own repeatability. Writes bench/out/latency_prediction.csv (one
row per mask) and bench/out/latency_prediction_summary.csv (one row per case) and prints both tables.

Run: `.venv/bin/python bench/latency_prediction.py [--cases resnet56:1 ...] [--masks 8] [--grid 5]`.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import time
import timeit
from pathlib import Path

import numpy as np
import torch
from common import machine_summary

from graphprune.models import ModelSpec, build_model
from graphprune.network.cost import CostModel
from graphprune.network.evaluate import evaluation_mode
from graphprune.network.latency import REMAINDERS, LatencyModel, torch_threads
from graphprune.network.pruning import ChannelGroups, Mask, prune_model

OUT = Path(__file__).resolve().parent / "out"
# torchvision ResNet-18 at 64x64, not 224: at 224 one batch-64 forward takes several seconds on one thread,
# too long for 8 masks x 2 networks x repeats on a shared 2-core machine; 64x64 keeps every layer (the stem
# and max-pool reduce it to 16x16, the last stage runs at 2x2).
MODELS = {
    "resnet56": ModelSpec("resnet56", input_size=32),
    "resnet18": ModelSpec("torchvision:resnet18", input_size=64),
    "mobilenetv2": ModelSpec("mobilenetv2", input_size=32),
}
# (warmup, timed repeats) of each side-by-side measurement, by batch size.
MEASURE = {1: (5, 31), 64: (2, 7)}
KEEP_RANGE = (0.3, 1.0)


def random_masks(groups: ChannelGroups, how_many: int, seed: int) -> list[Mask]:
    rng = random.Random(seed)
    masks = []
    for _ in range(how_many):
        kept = []
        for size in groups.sizes:
            count = max(min(groups.min_channels, size), round(rng.uniform(*KEEP_RANGE) * size))
            kept.append(tuple(sorted(rng.sample(range(size), count))))
        masks.append(Mask(groups.sizes, tuple(kept)))
    return masks


def measure_both_clocks(model, reference, x: torch.Tensor, warmup: int, repeats: int) -> dict[str, float]:
    """`measure_latency`'s procedure (warm-up, then repeats alternating the order, medians), reading the wall
    clock and the thread's CPU time around the same runs: {"wall": ratio, "cpu": ratio, "wall_full_s",
    "cpu_full_s"}."""
    times = {(clock, label): [] for clock in ("wall", "cpu") for label in ("model", "reference")}
    with evaluation_mode(model, reference), torch.no_grad():
        for _ in range(warmup):
            model(x)
            reference(x)
        for repeat in range(repeats):
            order = (("model", model), ("reference", reference))
            for label, net in order if repeat % 2 == 0 else order[::-1]:
                wall, cpu = time.perf_counter(), time.thread_time()
                net(x)
                times["cpu", label].append(time.thread_time() - cpu)
                times["wall", label].append(time.perf_counter() - wall)
    median = {key: statistics.median(values) for key, values in times.items()}
    # Repeatability: the spread of the ratios of the runs paired by round (pruned run / unpruned run).
    paired = [m / r for m, r in zip(times["wall", "model"], times["wall", "reference"], strict=True)]
    quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
    return {"wall": median["wall", "model"] / median["wall", "reference"],
            "cpu": median["cpu", "model"] / median["cpu", "reference"],
            "wall_full_s": median["wall", "reference"], "cpu_full_s": median["cpu", "reference"],
            "paired_iqr": (quartiles[2] - quartiles[0]) / quartiles[1]}


def run_case(name: str, batch: int, args) -> tuple[list[dict], dict]:
    spec = MODELS[name]
    torch.manual_seed(0)
    model = build_model(spec).eval()
    groups = ChannelGroups(model, spec.input_shape)
    cost = CostModel(model, groups)
    cache = Path(args.cache_dir)
    start = time.perf_counter()
    latency = LatencyModel(model, groups, batch, grid=args.grid, cache_dir=cache, rebuild=True)
    build_s = time.perf_counter() - start
    variants = {r: LatencyModel(model, groups, batch, grid=args.grid, cache_dir=cache, remainder=r)
                for r in REMAINDERS}
    assert not any(v.built for v in variants.values()), "the variants should read the table just built"
    counts = np.asarray(groups.sizes)
    call_us = timeit.timeit(lambda: latency.seconds(counts), number=2000) / 2000 * 1e6
    warmup, repeats = MEASURE[batch]
    rows = []
    for index, mask in enumerate(random_masks(groups, args.masks, seed=args.seed)):
        pruned = prune_model(model, groups, mask).eval()
        x = torch.randn(batch, *spec.input_shape)
        with torch_threads(1):
            measured = measure_both_clocks(pruned, model, x, warmup, repeats)
        row = {"model": name, "batch": batch, "mask": index, "flops_ratio": cost.ratio("flops", mask.counts),
               "measured_ratio": measured["wall"], "measured_cpu_ratio": measured["cpu"],
               "full_ms": measured["wall_full_s"] * 1e3, "full_cpu_ms": measured["cpu_full_s"] * 1e3,
               "paired_iqr": measured["paired_iqr"]}
        for remainder, model_r in variants.items():
            row[f"pred_{remainder}"] = model_r.ratio(mask.counts)
            row[f"err_{remainder}"] = abs(row[f"pred_{remainder}"] - measured["wall"]) / measured["wall"]
        row["err_cpu_fitted"] = abs(row["pred_fitted"] - measured["cpu"]) / measured["cpu"]
        row["err_flops"] = abs(row["flops_ratio"] - measured["wall"]) / measured["wall"]
        rows.append(row)
        print(f"  {name} b{batch} mask {index}: measured {measured['wall']:.3f} "
              f"(cpu {measured['cpu']:.3f}), predicted "
              f"{row['pred_fitted']:.3f} (error {row['err_fitted']:.1%})", flush=True)
    summary = {
        "model": name, "batch": batch, "input": "x".join(map(str, spec.input_shape)), "groups": len(groups),
        "timed_calls": len(latency.layers), "tables": len(latency.raw_tables), "build_s": build_s,
        "table_full_ms": latency.table_full_seconds * 1e3, "full_ms_at_build": latency.full_seconds * 1e3,
        "remainder_share": 1 - latency.table_full_seconds / latency.full_seconds, "predict_us": call_us,
        "clock": latency.clock, "table_scale": latency.table_scale,
        "median_paired_iqr": statistics.median(row["paired_iqr"] for row in rows),
    }
    for key in (*REMAINDERS, "cpu_fitted", "flops"):
        errors = [row[f"err_{key}"] for row in rows]
        summary[f"median_err_{key}"] = statistics.median(errors)
        summary[f"max_err_{key}"] = max(errors)
    return rows, summary


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def markdown(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=[f"{m}:{b}" for m in MODELS for b in (1, 64)],
                        help="model:batch pairs, models from " + ", ".join(MODELS))
    parser.add_argument("--masks", type=int, default=8)
    parser.add_argument("--grid", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=str(OUT / "latency_cache"))
    parser.add_argument("--tag", default="", help="suffix of the CSV names")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine_summary()}\n")
    all_rows, summaries = [], []
    for case in args.cases:
        name, batch = case.split(":")
        rows, summary = run_case(name, int(batch), args)
        all_rows += rows
        summaries.append(summary)
        print(f"done {case}: build {summary['build_s']:.1f} s, "
              f"median error {summary['median_err_fitted']:.1%}, "
              f"max {summary['max_err_fitted']:.1%}", flush=True)
    write_csv(OUT / f"latency_prediction{args.tag}.csv", all_rows)
    write_csv(OUT / f"latency_prediction_summary{args.tag}.csv", summaries)
    print("\nper mask (ratios: pruned / unpruned latency)\n")
    print(markdown(all_rows, ["model", "batch", "mask", "flops_ratio", "measured_ratio", "measured_cpu_ratio",
                              "paired_iqr", "pred_fitted", "err_fitted", "err_cpu_fitted", "pred_affine",
                              "pred_scaled", "pred_constant"]))
    print("\nper case (errors |pred - meas| / meas over the masks)\n")
    print(markdown(summaries, ["model", "batch", "input", "tables", "build_s", "full_ms_at_build",
                               "remainder_share", "table_scale", "median_paired_iqr", "median_err_fitted",
                               "max_err_fitted", "median_err_cpu_fitted", "max_err_cpu_fitted",
                               "median_err_affine", "max_err_affine", "median_err_scaled", "max_err_scaled",
                               "median_err_constant", "max_err_constant", "median_err_flops", "max_err_flops",
                               "predict_us"]))
    print(f"\nmachine at the end: {machine_summary()}")


if __name__ == "__main__":
    main()
