"""Model zoo: CIFAR ResNets, VGG-16-BN, MobileNetV2 and any torchvision classifier as `torchvision:<name>`.

A model is described by a `ModelSpec` (plain data from `graphprune.models.spec`, stored inside every
checkpoint) and rebuilt from it, so checkpoints never pickle modules. Input channels, class count and input
size follow the dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from graphprune.errors import GraphpruneError
from graphprune.models.cifar_resnet import CifarResNet
from graphprune.models.mobilenetv2 import CifarMobileNetV2
from graphprune.models.spec import ModelSpec
from graphprune.models.vgg import CifarVGG

TORCHVISION_PREFIX = "torchvision:"


def _resnet(depth: int) -> Callable[[ModelSpec], nn.Module]:
    return lambda spec: CifarResNet(depth, spec.num_classes, spec.in_channels)


ZOO: dict[str, Callable[[ModelSpec], nn.Module]] = {
    **{f"resnet{d}": _resnet(d) for d in (20, 32, 44, 56, 110)},
    "vgg16_bn": lambda spec: CifarVGG(spec.num_classes, spec.in_channels, spec.input_size),
    "mobilenetv2": lambda spec: CifarMobileNetV2(spec.num_classes, spec.in_channels),
}


def available_models() -> list[str]:
    return sorted(ZOO) + [TORCHVISION_PREFIX + "<name>"]


def build_model(spec: ModelSpec) -> nn.Module:
    """Build a freshly initialised model (or load local torchvision weights) from its spec."""
    if spec.name in ZOO:
        return ZOO[spec.name](spec)
    if spec.name.startswith(TORCHVISION_PREFIX):
        return _build_torchvision(spec)
    raise GraphpruneError(
        f"unknown model '{spec.name}'; choose one of {', '.join(available_models())}"
    )


def _build_torchvision(spec: ModelSpec) -> nn.Module:
    import torchvision  # here, not at the top: importing torchvision takes ~2 s (it loads torch._dynamo)

    arch = spec.name[len(TORCHVISION_PREFIX):]
    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        raise GraphpruneError(
            f"unknown torchvision model '{arch}'; torchvision classification models are: {', '.join(known)}"
        )
    model = torchvision.models.get_model(arch, weights=None, num_classes=spec.num_classes)
    if spec.in_channels != 3:
        _replace_stem(model, spec.in_channels)
    if spec.weights:
        path = Path(spec.weights)
        if not path.is_file():
            raise GraphpruneError(f"weights file {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt or non-tensor file
            raise GraphpruneError(f"cannot read weights file {path}: {exc}") from exc
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise GraphpruneError(
                f"weights file {path} does not fit {spec.name} with {spec.num_classes} classes: {exc}"
            ) from exc
    return model


def _replace_stem(model: nn.Module, in_channels: int) -> None:
    """Swap the first 3-channel conv for one with `in_channels` inputs (e.g. grayscale data)."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                setattr(parent, child_name, nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                    child.dilation, child.groups, child.bias is not None,
                ))
                return
    raise GraphpruneError("could not find a 3-channel input convolution to adapt to the dataset's channels")
