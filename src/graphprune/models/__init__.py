"""The models: `spec` (`ModelSpec`, the plain-data description of an architecture stored in every checkpoint;
torch-free, for the config code), `zoo` (builds a model from its spec: CIFAR ResNets, VGG-16-BN, MobileNetV2
and any torchvision classifier) and the zoo's own architectures (`cifar_resnet`, `vgg`, `mobilenetv2`).

`ModelSpec` is imported here; the zoo's names (`build_model`, `available_models`, `ZOO`,
`TORCHVISION_PREFIX`) load `zoo`, and so torch, on first use, so that `graphprune.models.spec` stays
importable without torch.
"""

from graphprune.models.spec import ModelSpec

_ZOO = ("TORCHVISION_PREFIX", "ZOO", "available_models", "build_model")
__all__ = ["ModelSpec", *_ZOO]


def __getattr__(name: str):
    if name in _ZOO:
        from graphprune.models import zoo

        return getattr(zoo, name)
    raise AttributeError(f"module 'graphprune.models' has no attribute {name!r}")
