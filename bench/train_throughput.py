"""Training throughput (images/s) of CIFAR ResNet-20 vs ResNet-56, measured side by side in one run.

One SGD step = forward + backward + update on a random 3x32x32 batch (batch 128 by default), so the figure is
the network's compute cost without data loading. The two models alternate in rounds and each reports its
median round, which keeps load drifting on a shared machine from favouring either. CUDA rounds use autocast
(float16), as the training recipe does with `amp: true`.

    .venv/bin/python bench/train_throughput.py [--batch-size 128] [--rounds 5] [--steps 2] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import machine_summary
from torch import nn

from graphprune.models import ModelSpec, build_model

MODELS = ("resnet20", "resnet56")


def make_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, use_amp: bool):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(images.device.type, enabled=use_amp)
    criterion = nn.CrossEntropyLoss()

    def step() -> None:
        with torch.autocast(images.device.type, enabled=use_amp):
            loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def measure(device: torch.device, batch_size: int, rounds: int, steps: int) -> dict[str, float]:
    """Median images/s per model over `rounds` alternating rounds of `steps` training steps."""
    torch.manual_seed(0)
    images = torch.randn(batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    use_amp = device.type == "cuda"
    steps_by_model = {}
    for name in MODELS:
        model = build_model(ModelSpec(name)).to(device).train()
        steps_by_model[name] = make_step(model, images, labels, use_amp)
        steps_by_model[name]()  # warm-up: allocator, kernel selection
    rates: dict[str, list[float]] = {name: [] for name in MODELS}
    for _ in range(rounds):
        for name, step in steps_by_model.items():
            synchronize(device)
            started = time.perf_counter()
            for _ in range(steps):
                step()
            synchronize(device)
            rates[name].append(steps * batch_size / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="training steps per round")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"{machine_summary()}; batch {args.batch_size}, 3x32x32")
    print(f"{'device':<28} {'resnet20 img/s':>15} {'resnet56 img/s':>15} {'ratio 20/56':>12}")
    for device in devices:
        rates = measure(device, args.batch_size, args.rounds, args.steps)
        label = torch.cuda.get_device_name(device) + " (amp)" if device.type == "cuda" else "cpu"
        print(f"{label:<28} {rates['resnet20']:>15.0f} {rates['resnet56']:>15.0f} "
              f"{rates['resnet20'] / rates['resnet56']:>12.2f}")


if __name__ == "__main__":
    main()
