"""Latency of a pruned network: measured (`measure_latency`), and predicted from per-layer timing tables.

`measure_latency` times two real networks side by side, one call per timed repeat (`time_forward`, wall
clock), and reports medians: what the metrics of `graphprune.prune` and the finetune stage report.
`LatencyModel` predicts how long `prune_model(model, groups, mask)` takes for one forward pass of a batch on a
device from the kept channel counts per group, in tens of microseconds, so that a latency budget can be
checked at every environment step. It is built once per (model structure, device, torch threads, batch size,
grid) by timing layers on the device, and cached on disk. This module never trains or changes a model.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from graphprune.checkpoint import atomic_torch_save, load_checkpoint
from graphprune.errors import GraphpruneError
from graphprune.network.evaluate import evaluation_mode
from graphprune.network.layer_calls import (
    CONV_TYPES,
    Affine,
    LayerCall,
    call_width,
    conv_widths,
    trace_layer_calls,
)
from graphprune.network.pruning import ChannelGroups, Mask, prune_model

FORMAT_VERSION = 2
REMAINDERS = ("fitted", "affine", "scaled", "constant")
CLOCKS = ("wall", "cpu")
# Keep fractions of every group in the pruned networks timed with the full one to fit the remainder; they
# give the zoo's 16/32/64/... channel layers widths that are not multiples of the channel block.
CALIBRATION_FRACTIONS = (0.6, 0.35)
# Weight of the full network's equation in the "fitted" remainder (relative errors): its prediction stays
# within a fraction of a percent of the measured latency.
_FULL_WEIGHT = 10.0
# Shortest timed stretch of one repeat: layers faster than this run several times per repeat.
_MIN_REPEAT_SECONDS = 2e-3


def default_cache_dir() -> Path:
    """`$GRAPHPRUNE_CACHE/latency`, else `$XDG_CACHE_HOME/graphprune/latency`, else
    ~/.cache/graphprune/latency."""
    if os.environ.get("GRAPHPRUNE_CACHE"):
        return Path(os.environ["GRAPHPRUNE_CACHE"]) / "latency"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "graphprune" / "latency"


def device_name(device: str | torch.device) -> str:
    """What the table's figures depend on besides the model: the CPU model, or the CUDA device's name."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as cpuinfo:
        cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    return f"{device.type} {cpu}"


# Environment settings of the C allocator that change how much a forward pass spends in page faults.
_ALLOCATOR_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                        "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX", "LD_PRELOAD")


def allocator_settings() -> str:
    """The allocator settings this process started with (see `LatencyModel`, Timing); "" for the defaults."""
    return " ".join(f"{name}={os.environ[name]}" for name in _ALLOCATOR_VARIABLES if os.environ.get(name))


def default_block(device: str | torch.device) -> int:
    """Channels per SIMD block of the device's convolution kernels: 16 floats with AVX-512, else 8."""
    if torch.device(device).type == "cpu" and "AVX512" in torch.backends.cpu.get_cpu_capability():
        return 16
    return 8


def default_clock(device: str | torch.device, threads: int | None) -> str:
    """"cpu" (thread CPU time) for one thread on the CPU, else "wall" (see `time_forward`)."""
    return "cpu" if torch.device(device).type == "cpu" and threads == 1 else "wall"


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` intra-op threads (None: unchanged); the previous count is restored."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_forward(module: nn.Module, x: torch.Tensor, number: int = 1, clock: str = "wall") -> float:
    """Seconds per call of `module(x)` over `number` back-to-back calls (no autograd): one timed repeat.

    clock: "wall" (`time.perf_counter`; CUDA is synchronised before and after) or "cpu" (the calling thread's
    CPU time, `time.thread_time`: the same as the wall time of single-threaded CPU work on an idle machine,
    but blind to the time other processes take the core away).
    """
    synchronize = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    now = time.thread_time if clock == "cpu" else time.perf_counter
    with torch.no_grad():
        synchronize()
        start = now()
        for _ in range(number):
            module(x)
        synchronize()
        return (now() - start) / number


def round_robin_times(runs: Sequence[tuple[nn.Module, torch.Tensor]], warmup: int, repeats: int,
                      clock: str = "wall") -> list[float]:
    """Seconds per call of each `module(x)` in `runs`, timed round-robin: every round times each once (the
    order reversed every other round), so that drift and other jobs' load hit all alike. With the wall clock
    the median of the `repeats` rounds (robust to a descheduled run); with the CPU clock, which a descheduled
    run does not reach, their mean (the speed of the core itself swings between two levels with the load on
    its sibling, and a network's long pass averages over both, as the mean of many short runs does).

    `warmup` untimed calls each first; a call shorter than 2 ms then runs several times per repeat (the count
    chosen from the last warm-up call), so that the clock's resolution and the loop do not count.
    """
    numbers = []
    for module, x in runs:
        number = 1
        for _ in range(warmup):
            seconds = max(time_forward(module, x, 1, clock), 1e-9)
            number = max(1, min(1000, int(_MIN_REPEAT_SECONDS / seconds)))
        numbers.append(number)
    times: list[list[float]] = [[] for _ in runs]
    order = list(range(len(runs)))
    for repeat in range(repeats):
        for index in order if repeat % 2 == 0 else order[::-1]:
            module, x = runs[index]
            times[index].append(time_forward(module, x, numbers[index], clock))
    average = statistics.fmean if clock == "cpu" else statistics.median
    return [average(t) for t in times]


def measure_latency(
    model: nn.Module,
    reference: nn.Module,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 64),
    device: str | torch.device = "cpu",
    warmup: int = 3,
    repeats: int = 20,
) -> dict[int, dict[str, float]]:
    """Median forward time of `model` and `reference` (both already on `device`), measured in one run.

    Runs are interleaved (and their order alternated) so that clock or load drift hits both models alike.
    Every timed repeat is one call (`time_forward`, wall clock); unlike `round_robin_times` (the timing
    tables), no short call is repeated within a repeat and no CPU clock is used, so that these numbers keep
    their meaning: the median seconds of one forward pass.
    input_shape: one sample, e.g. (3, 32, 32). Returns, per batch size,
    `{"model_s": median seconds, "reference_s": median seconds, "ratio": model_s / reference_s}`.
    Both models run in eval mode without autograd; their training flags are restored afterwards.
    """
    device = torch.device(device)
    if warmup < 0 or repeats < 1:
        raise GraphpruneError(f"latency needs warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    for label, net in (("model", model), ("reference", reference)):
        if any(p.device.type != device.type for p in net.parameters()):
            raise GraphpruneError(f"the {label} is not on {device}; move it there (.to('{device}')) first")

    results: dict[int, dict[str, float]] = {}
    with evaluation_mode(model, reference), torch.no_grad():
        for batch in batch_sizes:
            x = torch.randn(batch, *input_shape, device=device)
            for _ in range(warmup):
                time_forward(model, x)
                time_forward(reference, x)
            times: dict[str, list[float]] = {"model": [], "reference": []}
            for repeat in range(repeats):
                order = (("model", model), ("reference", reference))
                for label, net in order if repeat % 2 == 0 else order[::-1]:
                    times[label].append(time_forward(net, x))  # one call, wall clock
            model_s, reference_s = statistics.median(times["model"]), statistics.median(times["reference"])
            results[batch] = {"model_s": model_s, "reference_s": reference_s, "ratio": model_s / reference_s}
    return results


@dataclass(frozen=True)
class _TimedLayer:
    """A conv or linear call whose widths depend on the counts; calls with equal `key` share one table."""

    name: str
    key: str
    in_width: Affine
    out_width: Affine
    depthwise: bool
    make: tuple  # (type, constructor keyword arguments but the widths, input shape without batch and width)
    in_knots: tuple[int, ...]
    out_knots: tuple[int, ...]
    in_split: bool  # knots cover every block: multiples of the block interpolate apart (see `axis_knots`)
    out_split: bool


class LatencyModel:
    """Seconds of one forward pass of `prune_model(model, groups, mask)` on `batch_size` samples on `device`.

    API: `seconds(counts)`, `seconds_many(counts [N, G])`, `ratio(counts)` (to the unpruned network),
    `of_mask(mask)`, `full_seconds` (measured latency of the unpruned network), `path` (the table file),
    `built` (timed here rather than read from the cache), `build_seconds`. One call costs tens of
    microseconds (numpy only). Counts below `min_counts` or above the group sizes are clamped to the tables.

    **Tables.** Every conv or linear call whose input or output width depends on the kept counts is timed
    alone on the device (eval mode, no autograd) at a lattice of (input width, output width) knots; calls of
    the same shape share one table (ResNet-56's 58 such calls need 9 tables). A prediction interpolates each
    call's table bilinearly at its widths, which are affine in the counts (the `CostModel` trace), and adds
    them up. Time is not smooth in the width: kernels work on channel blocks of `block` (8 floats with AVX2,
    16 with AVX-512). Measured here (AVX2, 1 thread, batch 64, 3x3 conv at 32x32): about the same time for
    any input width in 9..15, 2-4x that of widths 1..8, and a width that is a multiple of 8 has a time of
    its own (input 16: 5 ms, inputs 9..15: 11 ms, for 9..16 outputs). So each axis is sampled per block
    (`axis_knots`): in each of at most `grid` blocks the first and last width that is not a multiple of
    `block` and the multiple ending it. Where every block of an axis is sampled (narrow layers), multiples
    of `block` are interpolated among themselves and the other widths among the others, which is exact for
    such steps and piecewise linear for a smooth time (batch 1, where PyTorch runs small convs as a GEMM);
    in wide layers the knots of evenly spread blocks form one sequence. Before use each table is made
    non-decreasing in both widths (`_monotone`: the mean of its upper and lower monotone envelopes), so the
    prediction never rises when a count drops (budget bisections rely on it), even where the real time
    does, e.g. 16 -> 15 channels above.

    **Remainder and scale.** What the tables do not time (batch norms, activations, adds, pooling,
    fixed-width layers, per-call overhead) is the remainder. Per-call overhead stays when channels go,
    elementwise work shrinks with the elements it touches, `e(counts)` (the input elements of every traced
    non-conv, non-linear module: affine in the counts). And a layer timed alone is not always the layer in
    the network: at batch 64 its output is a fresh allocation of megabytes whose page faults cost what the
    allocator's state makes them cost (an isolated 96-channel depthwise conv at 32x32: 18,400 page faults,
    about 46 of its 57 ms; 22 ms inside the network), so MobileNetV2's tables summed to 1.7x its measured
    latency. Hence `seconds = scale * tables(counts) + a + b * e(counts)`, fitted to the unpruned network and
    two physically pruned ones keeping `CALIBRATION_FRACTIONS` of every group, timed side by side:
    - "fitted" (default): scale > 0, a >= 0, b >= 0 by least squares on relative errors, the unpruned
      network weighted 10x (`_fit_remainder`);
    - "affine": scale 1, a and b (0 <= b <= remainder / e at full counts) through the unpruned network and
      the first pruned one; "scaled": scale 1, a = 0; "constant": scale 1, b = 0.
    bench/latency_prediction.py compares them (docs/BENCHMARKS.md, median error over 8 random masks):
    "scaled" fails at batch 1, where the remainder is mostly per-call overhead (ResNet-56: 15.6% vs 1.3%
    "fitted"); "affine" and "constant" fail most where tables and network disagree (MobileNetV2, batch 64,
    default allocator: 34% and 49% vs 24%); "fitted" was best or within 0.6 points of the best in every case.
    `ratio` divides by the prediction at full counts, so it is 1 there; `full_seconds` is the measured
    latency of the unpruned network.

    **Timing.** `threads` intra-op threads while timing (default 1; None: torch's setting; restored
    afterwards), `warmup` untimed calls and `repeats` timed ones per knot, all knots of a table timed
    round-robin (`round_robin_times`). `clock` defaults to the thread's CPU time ("cpu") for one thread on the
    CPU: on this 2-core machine shared with other jobs a ResNet-56 forward pass took 22 ms median wall time
    (never under 17.5 ms) for 10.5 ms (+-7%) of CPU time; elsewhere "wall".
    The remaining drift of the machine's speed (a co-runner on the other hyperthread slowed a 16-channel conv
    from 5 to 13 ms of CPU time) is corrected per table by a probe, the model's heaviest layer at full widths,
    timed among each table's knots and among the networks. The model is copied to `device` for timing
    where it lives elsewhere; it is never modified.

    **Allocator.** On the CPU at large batches the latency depends on the C allocator: glibc hands out
    blocks over 32 MB (a 64 x 144 x 32 x 32 activation of MobileNetV2) by mmap, page-faulted afresh on every
    call, and smaller ones from a heap whose reuse depends on what ran before. With its defaults the
    measured ratio of a pruned MobileNetV2 at batch 64 was 0.44 where with `MALLOC_MMAP_MAX_=0
    MALLOC_TRIM_THRESHOLD_=4294967295` (no mmap, no trimming: freed blocks are reused without faults) it was
    0.67, and only then did the tables predict batch-64 ratios within 10% (docs/BENCHMARKS.md). Set those
    variables (or preload jemalloc/tcmalloc) both when the table is built and where the latency matters; the
    allocator variables of the environment are part of the table's key.

    **Cache.** The raw measurements (tables, probe times, the three networks' latencies) are stored in
    `cache_dir` (default `default_cache_dir()`) as a plain dict of tensors and numbers, written atomically and
    read with `weights_only=True`, in a file named after the model class, batch size and a digest of the
    model structure, device name, threads, batch size, grid, block, clock, allocator settings and torch
    version. `table=<file>` uses that file instead (timed and written if absent); a file made for another
    model, device, thread count, batch size, grid, block, clock, allocator or torch version raises
    GraphpruneError naming each difference.
    `rebuild=True` times again and overwrites.
    """

    def __init__(
        self,
        model: nn.Module,
        groups: ChannelGroups,
        batch_size: int = 1,
        device: str | torch.device = "cpu",
        *,
        threads: int | None = 1,
        grid: int = 5,
        block: int | None = None,
        warmup: int = 2,
        repeats: int = 7,
        remainder: str = "fitted",
        clock: str | None = None,
        cache_dir: str | Path | None = None,
        table: str | Path | None = None,
        rebuild: bool = False,
    ):
        block = block or default_block(device)
        if min(batch_size, block, repeats, 1 if threads is None else threads) < 1 or grid < 2 or warmup < 0:
            raise GraphpruneError(
                "latency model needs batch_size >= 1, grid >= 2, block >= 1, warmup >= 0, repeats >= 1 and "
                f"threads >= 1, got {batch_size}, {grid}, {block}, {warmup}, {repeats} and {threads}"
            )
        if remainder not in REMAINDERS:
            raise GraphpruneError(
                f"unknown latency remainder {remainder!r}; use one of {', '.join(REMAINDERS)}")
        self.clock = clock or default_clock(device, threads)
        if self.clock not in CLOCKS:
            raise GraphpruneError(f"unknown clock {clock!r}; use one of {', '.join(CLOCKS)}")
        self.device = torch.device(device)
        if self.clock == "cpu" and (self.device.type != "cpu" or threads != 1):
            raise GraphpruneError("clock 'cpu' (thread CPU time) measures one thread on the CPU only: use "
                                  "threads=1 and device='cpu', or clock='wall'")
        self.groups = groups
        self.num_groups = len(groups)
        self.batch_size = batch_size
        self.remainder = remainder
        self.block = block
        sizes = np.asarray(groups.sizes, dtype=np.int64)
        self.min_counts: tuple[int, ...] = tuple(min(groups.min_channels, int(s)) for s in sizes)
        with torch_threads(threads):
            calls = trace_layer_calls(model, groups)
        self.layers, elementwise = _split_calls(calls, sizes, np.asarray(self.min_counts), grid, block)
        self._elements = _sum_affine(elementwise, self.num_groups)
        with torch_threads(threads):
            self.threads = torch.get_num_threads()
        self.meta = {
            "format": FORMAT_VERSION,
            "model": _structure_digest(groups, calls, self.layers),
            "model_class": type(model).__name__,
            "device": device_name(self.device),
            "threads": self.threads,
            "batch_size": batch_size,
            "grid": grid,
            "block": block,
            "clock": self.clock,
            "allocator": allocator_settings() if self.device.type == "cpu" else "",
            "torch": torch.__version__.split("+")[0],
        }
        if table is not None:
            self.path = Path(table)
        else:
            key = hashlib.sha256(json.dumps(self.meta, sort_keys=True).encode()).hexdigest()[:16]
            name = f"{type(model).__name__}-b{batch_size}-{key}.pt"
            self.path = Path(cache_dir or default_cache_dir()) / name
        self.built = False  # True when this instance timed the tables (not read from the cache)
        if self.path.exists() and not rebuild:
            data = load_checkpoint(self.path)
            _check_meta(self.path, data.get("meta", {}), self.meta)
        else:
            start = time.perf_counter()
            with torch_threads(threads):
                data = self._measure(model, warmup, repeats)
            data["build_seconds"] = time.perf_counter() - start
            atomic_torch_save(data, self.path)
            self.built = True
        self.build_seconds = float(data["build_seconds"])
        self._load(data)

    # -- building -------------------------------------------------------------------------------------------

    def _measure(self, model: nn.Module, warmup: int, repeats: int) -> dict:
        """Time every table with the probe layer among its knots, then the full network, the calibration
        networks and the probe together; raw figures only (`_load` rescales and fits)."""
        probe = _probe(self.layers, self.groups.sizes, self.batch_size, self.device) if self.layers else None
        tables, probe_seconds = {}, {}
        for layer in self.layers:
            if layer.key not in tables:
                tables[layer.key], probe_seconds[layer.key] = _time_table(
                    layer, probe, self.batch_size, self.device, warmup, repeats, self.clock)
        counts = np.array([[max(m, round(fraction * s)) for m, s in zip(self.min_counts, self.groups.sizes,
                                                                        strict=True)]
                           for fraction in CALIBRATION_FRACTIONS])
        full_net = _on_device(model, self.device)
        masks = [Mask(self.groups.sizes, tuple(tuple(range(c)) for c in row)) for row in counts]
        pruned = [_on_device(prune_model(model, self.groups, mask), self.device) for mask in masks]
        x = torch.randn(self.batch_size, *self.groups.input_shape, device=self.device)
        with evaluation_mode(full_net, *pruned):
            runs = [(full_net, x), *((net, x) for net in pruned), *([probe] if probe else [])]
            full_s, *rest = round_robin_times(runs, warmup, repeats, self.clock)
        return {
            "meta": dict(self.meta),
            "tables": tables,
            "probe_seconds": probe_seconds,  # per table: the probe's time among the table's knots
            "probe_final_seconds": rest[len(pruned)] if probe else 0.0,  # ... among the networks
            "full_seconds": full_s,
            "calibration_counts": torch.as_tensor(counts),  # [len(CALIBRATION_FRACTIONS), G]
            "calibration_seconds": torch.tensor(rest[:len(pruned)], dtype=torch.float64),
        }

    # -- prediction -----------------------------------------------------------------------------------------

    def _load(self, data: dict) -> None:
        tables = data["tables"]
        missing = {layer.key for layer in self.layers} - tables.keys()
        if missing:
            raise GraphpruneError(f"latency table {self.path} lacks {len(missing)} layer table(s) of this "
                                  "model; it is damaged: delete it or pass rebuild=True")
        self.raw_tables = {key: value.clone() for key, value in tables.items()}
        # The machine's speed drifts while tables are timed (other jobs come and go): each table is rescaled
        # by how fast the probe ran among its points relative to among the networks.
        final = float(data["probe_final_seconds"])
        self.probe_drift = {key: float(value) / final if final > 0 and value > 0 else 1.0
                            for key, value in data["probe_seconds"].items()}
        scaled = {key: value / self.probe_drift.get(key, 1.0) for key, value in tables.items()}
        self._interpolation = _Interpolation(self.layers, scaled, self.num_groups, self.block)
        sizes = np.asarray(self.groups.sizes, dtype=np.float64)
        self.full_seconds = float(data["full_seconds"])
        counts = np.concatenate([sizes[None], data["calibration_counts"].double().numpy()])
        self.table_full_seconds = float(self._interpolation(sizes[None])[0])
        self.table_scale, self.remainder_intercept, self.remainder_slope = _fit_remainder(
            self.remainder, self._interpolation(counts), self._elements_at(counts),
            np.concatenate([[self.full_seconds], data["calibration_seconds"].double().numpy()]))
        self._predicted_full = float(self.seconds_many(sizes[None])[0])

    def _elements_at(self, counts: np.ndarray) -> np.ndarray:
        base, slope = self._elements
        return base + counts @ slope

    def _matrix(self, counts: Sequence[int] | np.ndarray) -> np.ndarray:
        matrix = np.asarray(counts, dtype=np.float64)
        matrix = matrix.reshape(1, -1) if matrix.ndim == 1 else matrix
        if matrix.ndim != 2 or matrix.shape[1] != self.num_groups:
            raise ValueError(f"expected {self.num_groups} kept counts per row (one per group), got shape "
                             f"{np.shape(counts)}")
        return matrix

    def seconds_many(self, counts: np.ndarray) -> np.ndarray:
        """counts [N, G] -> [N] predicted seconds (one vectorised call for many candidate masks)."""
        matrix = self._matrix(counts)
        return (self.table_scale * self._interpolation(matrix) + self.remainder_intercept
                + self.remainder_slope * self._elements_at(matrix))

    def seconds(self, counts: Sequence[int] | np.ndarray) -> float:
        """Predicted seconds of one forward pass of the network keeping `counts[g]` channels of group g."""
        return float(self.seconds_many(self._matrix(counts))[0])

    def ratio(self, counts: Sequence[int] | np.ndarray) -> float:
        """Predicted latency relative to the unpruned network's (exactly 1 at full counts)."""
        return self.seconds(counts) / self._predicted_full

    def of_mask(self, mask: Mask) -> float:
        """Predicted seconds of the network pruned by `mask`."""
        self.groups.check(mask)
        return self.seconds(mask.counts)


class _Interpolation:
    """Bilinear interpolation in every timed layer's table at once, summed over layers.

    An axis's knots are its widths that are not multiples of the block, then those that are, shifted up by
    `stride` (above every width); a width is looked up among its own kind by the same shift. All 2L axes are
    then laid side by side on one number line (axis a shifted by a * 2 * stride), so that one `np.interp`
    call turns every width into a fractional knot position; four gathers from the concatenated tables and a
    few array operations finish the job. A fixed axis gets a second knot one above its only one, with the
    same times, so that every table has at least 2 x 2 knots; a width of a kind the axis has no knot of
    (unreachable by the counts) is looked up among the other kind.
    """

    def __init__(self, layers: list[_TimedLayer], tables: dict[str, torch.Tensor], num_groups: int,
                 block: int):
        in_knots, out_knots, flat, table_offsets, out_lengths = [], [], [], [], []
        stride = 2.0 + max((max(layer.in_knots[-1], layer.out_knots[-1]) for layer in layers), default=0)
        offset = 0
        for layer in layers:
            seconds = _monotone(tables[layer.key].double().numpy(), layer.in_knots, layer.out_knots)
            for axis, widths, split, knots in ((0, layer.in_knots, layer.in_split, in_knots),
                                               (1, layer.out_knots, layer.out_split, out_knots)):
                shifted = np.array([w + stride * (split and w % block == 0) for w in widths], np.float64)
                order = np.argsort(shifted, kind="stable")
                shifted, seconds = shifted[order], np.take(seconds, order, axis=axis)
                if len(shifted) == 1:
                    shifted = np.append(shifted, shifted[0] + 1)
                    seconds = np.repeat(seconds, 2, axis=axis)
                knots.append(shifted)
            flat.append(seconds.ravel())
            table_offsets.append(offset)
            out_lengths.append(seconds.shape[1])
            offset += seconds.size
        knots = in_knots + out_knots  # axis a < L: input width of layer a; a >= L: output width of a - L
        axes = [layer.in_width for layer in layers] + [layer.out_width for layer in layers]
        self.num_layers = len(layers)
        self.block = block
        self.stride = stride
        self.base = np.array([a.base for a in axes], dtype=np.float64)  # [2L]
        self.slope = np.array([a.slope for a in axes], dtype=np.float64).reshape(-1, num_groups).T  # [G, 2L]
        # Per axis and kind (0: not a multiple, 1: a multiple), the range of knots to clamp to; an axis
        # without knots of one kind sends that kind to the other one.
        low, high, has = np.zeros((2, len(knots))), np.zeros((2, len(knots))), np.zeros((2, len(knots)), bool)
        for a, k in enumerate(knots):
            for kind in (0, 1):
                mine = k[(k >= stride) == bool(kind)]
                has[kind, a] = len(mine) > 0
                low[kind, a], high[kind, a] = (mine[0], mine[-1]) if len(mine) else (0.0, 0.0)
        for kind in (0, 1):
            missing = ~has[kind]
            low[kind, missing], high[kind, missing] = low[1 - kind, missing], high[1 - kind, missing]
        self.low, self.high, self.has_multiple = low, high, has[1]
        self.last_cell = np.array([len(k) - 2 for k in knots], dtype=np.int64)
        self.shift = 2 * stride * np.arange(len(knots), dtype=np.float64)
        self.knots = (np.concatenate([k + s for k, s in zip(knots, self.shift, strict=True)]) if knots
                      else np.zeros(1))
        self.positions = np.arange(len(self.knots), dtype=np.float64)
        self.first_knot = np.cumsum([0] + [len(k) for k in knots])[:-1].astype(np.float64)
        self.flat = np.concatenate(flat) if flat else np.zeros(1)
        self.table_offsets = np.array(table_offsets, dtype=np.int64)
        self.out_lengths = np.array(out_lengths, dtype=np.int64)

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        """counts [N, G] float -> [N] seconds."""
        if not self.num_layers:
            return np.zeros(len(counts))
        widths = self.base + counts @ self.slope  # [N, 2L]
        multiple = (np.fmod(widths, self.block) == 0) & self.has_multiple
        kind = multiple.astype(np.int64)
        columns = np.arange(widths.shape[1])
        shifted = np.minimum(np.maximum(widths + self.stride * multiple, self.low[kind, columns]),
                             self.high[kind, columns])
        position = np.interp(shifted + self.shift, self.knots, self.positions) - self.first_knot
        cell = np.minimum(position.astype(np.int64), self.last_cell)
        fraction = position - cell
        layers = self.num_layers
        corner = self.table_offsets + cell[:, :layers] * self.out_lengths + cell[:, layers:]
        t00, t01 = self.flat[corner], self.flat[corner + 1]
        t10, t11 = self.flat[corner + self.out_lengths], self.flat[corner + self.out_lengths + 1]
        f_in, f_out = fraction[:, :layers], fraction[:, layers:]
        low = t00 + f_out * (t01 - t00)
        return (low + f_in * (t10 + f_out * (t11 - t10) - low)).sum(axis=1)


# -- helpers ------------------------------------------------------------------------------------------------


def _fit_remainder(remainder: str, table: np.ndarray, elements: np.ndarray,
                   measured: np.ndarray) -> tuple[float, float, float]:
    """(table scale, intercept a, seconds per element b) of `seconds = scale * table + a + b * elements`.

    Row 0 of the arrays is the full network, the others the calibration networks. "fitted": all three, not
    negative, by weighted least squares on relative errors (the full network weighted `_FULL_WEIGHT`), over
    the sets of free parameters that keep the scale (an exact solve when the three rows admit one).
    "affine": scale 1, a and b through the full network and the first calibration one. "scaled": scale 1,
    a = 0. "constant": scale 1, b = 0. Outside "fitted", 0 <= b <= remainder / elements at full counts:
    no negative overhead, and the remainder never falls when channels are added.
    """
    rest = measured - table
    e_full = elements[0]
    if remainder == "fitted" and table[0] > 0:
        weights = np.full(len(measured), 1.0)
        weights[0] = _FULL_WEIGHT
        design = np.stack([table, np.ones_like(table), elements], axis=1) * (weights / measured)[:, None]
        target = weights  # measured / measured
        best = None
        for free in ((0,), (0, 1), (0, 2), (0, 1, 2)):
            solution, *_ = np.linalg.lstsq(design[:, free], target, rcond=None)
            if solution[0] <= 0 or (solution[1:] < 0).any():
                continue
            residual = float(np.sum((design[:, free] @ solution - target) ** 2))
            if best is None or residual < best[0] - 1e-12:
                best = (residual, free, solution)
        if best is not None:
            parameters = np.zeros(3)
            parameters[list(best[1])] = best[2]
            return float(parameters[0]), float(parameters[1]), float(parameters[2])
        remainder = "affine"
    if remainder == "constant" or e_full <= 0:
        slope = 0.0
    elif remainder == "scaled":
        slope = rest[0] / e_full
    else:
        slope = (rest[0] - rest[1]) / (e_full - elements[1]) if e_full > elements[1] else 0.0
    slope = min(max(slope, 0.0), max(rest[0], 0.0) / e_full) if e_full > 0 else 0.0
    return 1.0, float(rest[0] - slope * e_full), float(slope)


def _monotone(seconds: np.ndarray, in_knots: Sequence[int], out_knots: Sequence[int]) -> np.ndarray:
    """The table made non-decreasing in both widths (knots in width order): the mean of its upper envelope
    (each entry raised to the largest time at widths at most its own on both axes) and its lower envelope
    (lowered to the smallest time at widths at least its own). Both are non-decreasing, so their mean is;
    a table that already is stays unchanged, and one slow outlier moves its neighbours half as far as the
    upper envelope alone would."""
    order_in, order_out = np.argsort(in_knots, kind="stable"), np.argsort(out_knots, kind="stable")
    by_width = seconds[np.ix_(order_in, order_out)]
    upper = np.maximum.accumulate(np.maximum.accumulate(by_width, axis=0), axis=1)
    lower = np.minimum.accumulate(np.minimum.accumulate(by_width[::-1, ::-1], axis=0), axis=1)[::-1, ::-1]
    result = np.empty_like(seconds)
    result[np.ix_(order_in, order_out)] = (upper + lower) / 2
    return result


def _split_calls(calls: list[LayerCall], sizes: np.ndarray, min_counts: np.ndarray, grid: int,
                 block: int) -> tuple[list[_TimedLayer], list[Affine]]:
    """(the conv/linear calls to time, the input elements of every other traced call as affine widths)."""
    layers, elementwise = [], []
    for call in calls:
        module = call.module
        if isinstance(module, CONV_TYPES):
            in_width, out_width, kind = conv_widths(call, sizes)
        elif isinstance(module, nn.Linear):
            in_width = call_width(call, "in_channels", module.in_features, sizes)
            out_width = call_width(call, "out_channels", module.out_features, sizes)
            kind = "dense"
        else:
            elementwise.append(call_width(call, "in_elements", math.prod(call.in_shape), sizes))
            continue
        if in_width.is_constant and out_width.is_constant:
            continue  # fixed cost: part of the remainder
        depthwise = kind == "depthwise"
        in_knots, in_split = axis_knots(*_range(in_width, min_counts, sizes), grid, block)
        out_knots, out_split = axis_knots(*_range(out_width, min_counts, sizes), grid, block)
        if depthwise:
            in_knots, in_split = out_knots, out_split
        make = _constructor(module, call.in_shape)
        key = json.dumps([repr(make), in_knots, out_knots, depthwise])
        layers.append(_TimedLayer(call.name, key, in_width, out_width, depthwise, make, in_knots, out_knots,
                                  in_split, out_split))
    return layers, elementwise


def _range(width: Affine, min_counts: np.ndarray, sizes: np.ndarray) -> tuple[int, int]:
    return width.base + int(width.slope @ min_counts), width.base + int(width.slope @ sizes)


def axis_knots(low: int, high: int, blocks: int, block: int) -> tuple[tuple[int, ...], bool]:
    """(widths at which to time an axis spanning [low, high], split): for each of at most `blocks` blocks of
    `block` channels (all of them if there are few; else evenly spread, first and last included), the first
    and the last width inside it that is not a multiple of `block`, and the multiple that ends it; plus the
    smallest and largest non-multiple of the range. Sorted by width.

    split: every block of the range is sampled, so that multiples of `block` can be interpolated among
    themselves and the other widths among the others, keeping the prediction non-decreasing in the width
    (see `_monotone`). Where blocks are skipped (wide layers) all knots are interpolated as one sequence:
    a width between sampled blocks then gets a linear mix, which is smooth enough at that width."""
    first, last = -(-low // block), -(-high // block)
    split = last - first < blocks
    chosen = (range(first, last + 1) if split
              else sorted({int(round(b)) for b in np.linspace(first, last, blocks)}))
    knots = set()
    for b in chosen:
        start, end = max(low, (b - 1) * block + 1), min(high, b * block)
        knots.update(w for w in (start, min(end, b * block - 1), end) if start <= w <= end)
    others = [w for w in (low, low + 1, high - 1, high) if low <= w <= high and w % block]
    knots.update((min(others), max(others)) if others else ())
    return tuple(sorted(knots)), split


def _constructor(module: nn.Module, in_shape: tuple[int, ...]) -> tuple:
    """(type, keyword arguments but the widths, input shape without batch and width) of a resizable copy."""
    if isinstance(module, nn.Linear):
        return nn.Linear, (("bias", module.bias is not None),), tuple(in_shape[:-1])
    arguments = [("kernel_size", module.kernel_size), ("stride", module.stride), ("padding", module.padding),
                 ("dilation", module.dilation), ("bias", module.bias is not None),
                 ("padding_mode", module.padding_mode)]
    if module.transposed:
        arguments.append(("output_padding", module.output_padding))
    return type(module), tuple(arguments), tuple(in_shape[1:])


def _build(layer: _TimedLayer, in_width: int, out_width: int, device: torch.device) -> nn.Module:
    cls, arguments, _shape = layer.make
    kwargs = dict(arguments)
    if layer.depthwise:
        kwargs["groups"] = in_width
    return cls(in_width, out_width, **kwargs).to(device).eval()


def _example(layer: _TimedLayer, in_width: int, batch: int, device: torch.device) -> torch.Tensor:
    cls, _arguments, shape = layer.make
    shape = (batch, *shape, in_width) if cls is nn.Linear else (batch, in_width, *shape)
    return torch.randn(shape, device=device)


def _time_table(layer: _TimedLayer, probe: tuple[nn.Module, torch.Tensor], batch: int, device: torch.device,
                warmup: int, repeats: int, clock: str) -> tuple[torch.Tensor, float]:
    """([len(in_knots), len(out_knots)] seconds of the layer at each pair of widths (depthwise: at equal
    widths, copied along the input axis), seconds of the probe), all timed round-robin together."""
    inputs = {w: _example(layer, w, batch, device) for w in layer.in_knots}
    if layer.depthwise:
        points = [(j, j) for j in range(len(layer.out_knots))]
    else:
        points = [(i, j) for i in range(len(layer.in_knots)) for j in range(len(layer.out_knots))]
    runs = [(_build(layer, layer.in_knots[i], layer.out_knots[j], device), inputs[layer.in_knots[i]])
            for i, j in points]
    *measured, probe_seconds = round_robin_times([*runs, probe], warmup, repeats, clock)
    seconds = torch.zeros(len(layer.in_knots), len(layer.out_knots), dtype=torch.float64)
    for (i, j), value in zip(points, measured, strict=True):
        if layer.depthwise:
            seconds[:, j] = value
        else:
            seconds[i, j] = value
    return seconds, probe_seconds


def _probe(layers: list[_TimedLayer], sizes: Sequence[int], batch: int,
           device: torch.device) -> tuple[nn.Module, torch.Tensor]:
    """(module, input) of the timed layer with the most multiply-accumulates at full widths: timed with
    every table and with the networks, it measures how much slower the machine ran while each was timed."""
    full = np.asarray(sizes)

    def work(layer: _TimedLayer) -> float:
        in_width, out_width = layer.in_width.base + layer.in_width.slope @ full, \
            layer.out_width.base + layer.out_width.slope @ full
        kernel = math.prod(dict(layer.make[1]).get("kernel_size", (1,)))
        positions = math.prod(layer.make[2])
        return float(in_width * out_width * kernel * positions / (in_width if layer.depthwise else 1))

    layer = max(layers, key=work)
    in_width, out_width = (int(w.base + w.slope @ full) for w in (layer.in_width, layer.out_width))
    return _build(layer, in_width, out_width, device), _example(layer, in_width, batch, device)


def _on_device(model: nn.Module, device: torch.device) -> nn.Module:
    param = next(model.parameters(), None)
    if param is None or param.device == device or (device.index is None and param.device.type == device.type):
        return model
    return copy.deepcopy(model).to(device)


def _sum_affine(widths: list[Affine], num_groups: int) -> tuple[float, np.ndarray]:
    base = float(sum(w.base for w in widths))
    slope = np.sum([w.slope for w in widths], axis=0).astype(np.float64) if widths else np.zeros(num_groups)
    return base, slope


def _structure_digest(groups: ChannelGroups, calls: list[LayerCall], layers: list[_TimedLayer]) -> str:
    """A digest of what the latency depends on: the traced calls (types, shapes, module settings), the timed
    layers' widths as functions of the counts, the group sizes and the input shape; not the weights."""
    description = {
        "input_shape": list(groups.input_shape),
        "sizes": list(groups.sizes),
        "min_channels": groups.min_channels,
        "calls": [[call.name, type(call.module).__name__, list(call.in_shape), list(call.out_shape),
                   repr(call.module)] for call in calls],
        "timed": [[layer.name, layer.key, layer.in_width.base, layer.in_width.slope.tolist(),
                   layer.out_width.base, layer.out_width.slope.tolist()] for layer in layers],
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


_META_WORDS = {"format": "file format", "model": "model structure", "model_class": "model class",
               "device": "device", "threads": "torch threads", "batch_size": "batch size",
               "grid": "grid size",
               "block": "channel block", "clock": "clock", "allocator": "allocator settings",
               "torch": "torch version"}


def _check_meta(path: Path, stored: dict, wanted: dict) -> None:
    differences = [f"{word} {stored.get(key)!r} (here: {wanted[key]!r})" for key, word in _META_WORDS.items()
                   if stored.get(key) != wanted[key]]
    if differences:
        raise GraphpruneError(
            f"latency table {path} was made for another setting: {'; '.join(differences)}. A table is valid "
            "only for the model, device, thread count and batch size it was timed with: build one here "
            "(another "
            "table path, or rebuild=True to overwrite this one)"
        )


def latency_model(model: nn.Module, groups: ChannelGroups, settings: Mapping[str, Any]):
    """The latency table of `model` for a `search.latency` section (timed once, then read from its cache)."""
    return LatencyModel(model, groups, settings["batch_size"], settings["device"], grid=settings["grid"],
                        cache_dir=settings["cache_dir"])
