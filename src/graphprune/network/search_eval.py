"""Search-time accuracy of a mask: the pruned network's forward on a fixed subset of the search split, cached
by mask. Where the model allows it the forward runs on sliced tensors (`sliced.SlicedNetwork`: the pruned
network's cost), otherwise on the full network with pruned channels zeroed (`pruning.ChannelMasker`).

Every candidate mask gets its own batch-norm statistics from a few fixed training batches before it is scored
(BN recalibration, on by default): without it every pruned network scores near chance and an accuracy
reward is noise (docs/BASELINES.md). The test split is never touched here. The cache only saves work;
the distinct masks a search scores are counted by `methods.base.BudgetedEvaluator`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from graphprune.errors import GraphpruneError
from graphprune.network.evaluate import BN_TYPES, evaluation_mode, recalibrate_batch_norm
from graphprune.network.pruning import ChannelGroups, ChannelMasker, Mask
from graphprune.network.sliced import SlicedNetwork

log = logging.getLogger(__name__)


@dataclass
class SearchEvaluator:
    """Callable `mask -> top-1 accuracy` on `images`/`labels`, with per-mask BN recalibration.

    images: [S, C, H, W] search images; labels: [S]; calibration: list of [B, C, H, W] training batches.
    The model is left exactly as it was (hooks removed, BN statistics restored) after every call.
    """

    model: nn.Module
    groups: ChannelGroups
    images: torch.Tensor
    labels: torch.Tensor
    calibration: list[torch.Tensor]
    recalibrate_bn: bool = True
    batch_size: int = 1024
    sliced: bool = True  # False: always the masked forward (the two agree; tested)
    # Images in NHWC memory order: a pruned network's odd channel counts (9, 13, ...) miss oneDNN's blocked
    # NCHW kernels and run several times slower there, while NHWC kernels take any width
    # (bench/search_eval_speed.py). Only the memory order changes, not the values.
    channels_last: bool = True

    def __post_init__(self):
        if self.channels_last and self.images.dim() == 4:
            self.images = _channels_last(self.images)
            self.calibration = [_channels_last(b) for b in self.calibration]
        self._cache: dict[str, float] = {}
        self._bns = [m for m in self.model.modules() if isinstance(m, BN_TYPES)]
        self._sliced = None
        if self.sliced and SlicedNetwork.supports(self.model, self.groups):
            sliced = SlicedNetwork(self.model, self.groups)
            if sliced.agrees_with_masking():
                self._sliced = sliced
            else:
                log.warning("%s: sliced forward differs from the masked one; scoring masks by masking (slower)",
                            type(self.model).__name__)

    def __call__(self, mask: Mask) -> float:
        key = mask.key()
        if key not in self._cache:
            self._cache[key] = self._sliced_accuracy(mask) if self._sliced else self._masked_accuracy(mask)
        return self._cache[key]

    def calibrate(self, network: nn.Module) -> None:
        """Give `network` (the physically pruned network of a scored mask) the BN statistics the mask was scored
        with: the same calibration batches, so its accuracy on `images` is the score (tested)."""
        if self.recalibrate_bn:
            recalibrate_batch_norm(network, self.calibration)

    def accuracy_of(self, network: nn.Module) -> float:
        """Top-1 of `network` (any module taking these images, e.g. the pruned network) on `images`."""
        with evaluation_mode(network), torch.no_grad():
            return self._accuracy(network)

    def _sliced_accuracy(self, mask: Mask) -> float:
        with evaluation_mode(self.model), torch.no_grad():
            tensors = (self._sliced.recalibrated(mask, self.calibration) if self.recalibrate_bn
                       else self._sliced.tensors(mask))
            return self._accuracy(lambda images: self._sliced.forward(tensors, images))

    def _masked_accuracy(self, mask: Mask) -> float:
        # recalibrate_batch_norm puts momentum and modes back itself; the statistics are restored here.
        saved = [_bn_buffers(bn) for bn in self._bns] if self.recalibrate_bn else []
        try:
            with evaluation_mode(self.model), ChannelMasker(self.model, self.groups, mask), torch.no_grad():
                if self.recalibrate_bn:
                    recalibrate_batch_norm(self.model, self.calibration)
                return self._accuracy(self.model)
        finally:
            for bn, state in zip(self._bns, saved, strict=False):
                _restore_bn(bn, state)

    def _accuracy(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> float:
        correct = 0
        for start in range(0, len(self.labels), self.batch_size):
            logits = forward(self.images[start:start + self.batch_size])
            correct += (logits.argmax(1) == self.labels[start:start + self.batch_size]).sum().item()
        return correct / len(self.labels)


def _channels_last(images: torch.Tensor) -> torch.Tensor:
    """A copy of [N, C, H, W] `images` with NHWC strides. Not `.contiguous(memory_format=...)`: with one
    channel that returns the tensor unchanged (both orders count as contiguous), and convolutions then keep
    NCHW all the way through."""
    return torch.empty_like(images, memory_format=torch.channels_last).copy_(images)


def _bn_buffers(bn: nn.Module) -> dict[str, torch.Tensor]:
    return {name: buf.clone() for name, buf in bn.named_buffers(recurse=False)}


def _restore_bn(bn: nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    for name, buf in bn.named_buffers(recurse=False):
        buf.copy_(buffers[name])


def materialize(dataset: Dataset, count: int | None, batch_size: int, seed: int,
                device: torch.device | str, skip: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Items `skip` to `skip + count` of a seeded permutation of `dataset` as tensors ([S, C, H, W], [S]) on
    `device` (count None: all after `skip`).

    Done once per search so that every mask is scored on the very same images (and augmentation, if the
    dataset has any, is drawn once under the seed). Two calls with the same seed and disjoint ranges give
    disjoint images.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)[skip:]
    if count is not None:
        order = order[:count]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        loader = DataLoader(Subset(dataset, order.tolist()), batch_size=batch_size, shuffle=False)
        images, labels = zip(*loader, strict=True)
    finally:
        torch.random.set_rng_state(state)
    return torch.cat(images).to(device), torch.cat(labels).to(device)


def build_search_evaluator(model: nn.Module, groups: ChannelGroups, search_set: Dataset, train_set: Dataset,
                           *, search_images: int | None, calibration_batches: int, calibration_batch_size: int,
                           recalibrate_bn: bool, seed: int, device: torch.device | str) -> SearchEvaluator:
    """A SearchEvaluator on a fixed subset of the search split and fixed calibration batches of train data."""
    return build_search_evaluators(
        model, groups, search_set, train_set, search_images=search_images, reselect_images=0,
        calibration_batches=calibration_batches, calibration_batch_size=calibration_batch_size,
        recalibrate_bn=recalibrate_bn, seed=seed, device=device)[0]


def build_search_evaluators(model: nn.Module, groups: ChannelGroups, search_set: Dataset, train_set: Dataset,
                            *, search_images: int | None, reselect_images: int, calibration_batches: int,
                            calibration_batch_size: int, recalibrate_bn: bool, seed: int,
                            device: torch.device | str) -> tuple[SearchEvaluator, SearchEvaluator | None]:
    """The search's evaluator and the reselection evaluator (None when `reselect_images` is 0), on disjoint
    images of the search split drawn by `seed` (so every seed of a search scores its own images), with the
    same calibration batches, also drawn by `seed`."""
    if reselect_images >= len(search_set):
        raise GraphpruneError(f"search.reselect_images ({reselect_images}) leaves none of the {len(search_set)} "
                              "search-split images for the search itself")
    if search_images is not None and reselect_images + search_images > len(search_set):
        raise GraphpruneError(f"search.search_images ({search_images}) + search.reselect_images ({reselect_images}) "
                              f"exceed the search split ({len(search_set)} images)")
    calibration = calibration_images(train_set, calibration_batches, calibration_batch_size, seed, device)
    model = model.to(device)
    images, labels = materialize(search_set, search_images, 1024, seed, device, skip=reselect_images)
    search = SearchEvaluator(model, groups, images, labels, calibration, recalibrate_bn)
    if not reselect_images:
        return search, None
    held_images, held_labels = materialize(search_set, reselect_images, 1024, seed, device)
    return search, SearchEvaluator(model, groups, held_images, held_labels, calibration, recalibrate_bn)


def calibration_images(train_set: Dataset, batches: int, batch_size: int, seed: int,
                       device: torch.device | str) -> list[torch.Tensor]:
    """The fixed BN-calibration batches (`batches` x [batch_size, C, H, W] training images) of a search with
    `seed`: search scoring and fine-tuning recalibrate on the very same images."""
    images, _ = materialize(train_set, batches * batch_size, batch_size, seed + 1, device)
    return list(images.split(batch_size))
