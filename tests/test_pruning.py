"""Physical pruning equals masking on every supported model; pruned networks and masks survive disk; ONNX export;
user errors (min channels, untraceable models, bad files) are GraphpruneErrors naming the problem."""

import functools

import pytest
import torch
from torch import nn

from graphprune.checkpoint import atomic_torch_save, save_model
from graphprune.errors import GraphpruneError
from graphprune.models import ModelSpec, build_model
from graphprune.network.pruning import (
    ChannelGroups,
    ChannelMasker,
    Mask,
    export_onnx,
    load_mask,
    load_pruned,
    prune_model,
    save_mask,
    save_pruned,
)

CIFAR = {"in_channels": 3, "input_size": 32}
DIGITS = {"in_channels": 1, "input_size": 8}
TORCHVISION = {"in_channels": 3, "input_size": 64}  # small inputs keep the big torchvision nets fast

ZOO_CASES = [(name, CIFAR) for name in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg16_bn",
                                        "mobilenetv2")] + [("resnet20", DIGITS)]
TORCHVISION_CASES = [
    (f"torchvision:{arch}", TORCHVISION)
    for arch in ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "vgg16_bn", "densenet121",
                 "efficientnet_b0", "regnet_x_400mf", "convnext_tiny")
]
# ONNX export for the zoo and two small torchvision nets (exporting is the slow part).
EXPORTED = {name for name, _ in ZOO_CASES} | {"torchvision:resnet18", "torchvision:mobilenet_v3_small"}
AGREEMENT_TOLERANCE = 1e-4


def case_id(case) -> str:
    name, shape = case
    return f"{name}-{shape['in_channels']}x{shape['input_size']}"


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics and affine parameters, and random layer scales (ConvNeXt starts them at 1e-6): with
    fresh-init values (mean 0, var 1, gamma 1, beta 0) a wrong channel mapping could go unnoticed. Gammas of
    random sign below 1 keep deep residual nets' outputs near unit scale, where 1e-4 is a strict tolerance."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                size = module.num_features
                module.running_mean.normal_(0.0, 0.3, generator=generator)
                module.running_var.uniform_(1.0, 2.0, generator=generator)
                sign = torch.randint(0, 2, (size,), generator=generator) * 2.0 - 1.0
                module.weight.copy_(sign * torch.empty(size).uniform_(0.2, 0.8, generator=generator))
                module.bias.normal_(0.0, 0.3, generator=generator)
        for name, param in model.named_parameters():
            if "layer_scale" in name:
                param.normal_(0.0, 1.0, generator=generator)
    return model.eval()


@functools.cache
def prepared(name: str, in_channels: int, input_size: int) -> tuple[ModelSpec, nn.Module, ChannelGroups]:
    torch.manual_seed(0)
    spec = ModelSpec(name, in_channels=in_channels, input_size=input_size)
    model = randomise(build_model(spec), seed=1)
    return spec, model, ChannelGroups(model, spec.input_shape)


def random_mask(groups: ChannelGroups, seed: int) -> Mask:
    """About half of each group's channels, at least one, chosen at random."""
    generator = torch.Generator().manual_seed(seed)
    flags = []
    for size in groups.sizes:
        keep = torch.rand(size, generator=generator) < 0.5
        keep[torch.randint(size, (1,), generator=generator)] = True
        flags.append(keep)
    return Mask.from_keep_flags(flags)


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def check_prune_save_load_export(name: str, shape: dict, tmp_path) -> None:
    spec, model, groups = prepared(name, **shape)
    assert len(groups) > 0
    mask = random_mask(groups, seed=len(name))
    x = torch.randn(4, *spec.input_shape, generator=torch.Generator().manual_seed(2))
    with ChannelMasker(model, groups, mask):
        masked = outputs(model, x)
    pruned = prune_model(model, groups, mask)
    physical = outputs(pruned, x)
    # Absolute 1e-4, and relative to the output's scale where the logits are small (MobileNetV3: ~0.01).
    tolerance = AGREEMENT_TOLERANCE * min(1.0, float(masked.abs().max()))
    assert (masked - physical).abs().max() < tolerance
    assert (masked - outputs(model, x)).abs().max() > 100 * tolerance, "the mask must change the output"
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())

    save_pruned(tmp_path / "model.pt", spec, mask, pruned, {"method": "test"}, groups)
    loaded = load_pruned(tmp_path / "model.pt")
    assert loaded.spec == spec and loaded.mask == mask and loaded.meta == {"method": "test"}
    assert not loaded.model.training
    assert (outputs(loaded.model, x) - physical).abs().max() <= 1e-6

    if name in EXPORTED:
        exporter = export_onnx(pruned, spec.input_shape, tmp_path / "model.onnx")
        assert exporter in ("torchscript", "dynamo")
        assert (tmp_path / "model.onnx").stat().st_size > 0


@pytest.mark.parametrize(("name", "shape"), ZOO_CASES, ids=[case_id(c) for c in ZOO_CASES])
def test_zoo_pruned_equals_masked_and_round_trips(name, shape, tmp_path):
    check_prune_save_load_export(name, shape, tmp_path)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Unwrapped parameters detected")  # ConvNeXt's layer scales; groups exclude them
@pytest.mark.parametrize(("name", "shape"), TORCHVISION_CASES, ids=[case_id(c) for c in TORCHVISION_CASES])
def test_torchvision_pruned_equals_masked_and_round_trips(name, shape, tmp_path):
    check_prune_save_load_export(name, shape, tmp_path)


def test_onnx_falls_back_to_the_dynamo_exporter(tmp_path):
    # Adaptive pooling to a size that does not divide the input has no TorchScript-exporter translation.
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(4 * 49, 3))
    assert export_onnx(model, (3, 4, 4), tmp_path / "model.onnx") == "dynamo"
    assert (tmp_path / "model.onnx").stat().st_size > 0


def test_onnx_file_has_a_dynamic_batch(tmp_path):
    import onnx

    spec, model, groups = prepared("resnet20", **DIGITS)
    export_onnx(prune_model(model, groups, random_mask(groups, 0)), spec.input_shape, tmp_path / "model.onnx")
    graph = onnx.load(tmp_path / "model.onnx").graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value


def test_save_without_groups_traces_them_again(tmp_path):
    spec, model, groups = prepared("resnet20", **DIGITS)
    mask = random_mask(groups, 3)
    pruned = prune_model(model, groups, mask)
    save_pruned(tmp_path / "model.pt", spec, mask, pruned, {})
    stored = torch.load(tmp_path / "model.pt", weights_only=True)
    assert stored["group_roots"] == list(groups.roots) and stored["min_channels"] == 1
    assert stored["mask"] == mask.to_dict()


def test_saving_the_unpruned_model_is_refused(tmp_path):
    spec, model, groups = prepared("resnet20", **DIGITS)
    with pytest.raises(GraphpruneError, match="not pruned by this mask"):
        save_pruned(tmp_path / "model.pt", spec, random_mask(groups, 4), model, {}, groups)
    assert not (tmp_path / "model.pt").exists()


def test_min_channel_rule_rejects_a_mask_below_it():
    spec, model, _ = prepared("resnet20", **DIGITS)
    groups = ChannelGroups(model, spec.input_shape, min_channels=2)
    one_left = Mask(groups.sizes, ((0,),) + tuple(tuple(range(s)) for s in groups.sizes[1:]))
    emptied = Mask(groups.sizes, ((),) + one_left.kept[1:])
    for mask in (one_left, emptied):
        with pytest.raises(GraphpruneError, match="at least 2 must stay"):
            prune_model(model, groups, mask)
        with pytest.raises(GraphpruneError, match="at least 2 must stay"):
            ChannelMasker(model, groups, mask)
    with pytest.raises(GraphpruneError, match="at least 1"):
        ChannelGroups(model, spec.input_shape, min_channels=0)


def test_mask_hashing_and_serialisation_round_trip(tmp_path):
    _, _, groups = prepared("resnet20", **DIGITS)
    mask = random_mask(groups, 5)
    copy = Mask.from_dict(mask.to_dict())
    assert copy == mask and hash(copy) == hash(mask) and copy.key() == mask.key()
    assert Mask.from_keep_flags([mask.keep_flags(g) for g in range(len(groups))]) == mask
    assert random_mask(groups, 6).key() != mask.key()
    assert len({mask, copy, groups.full_mask()}) == 2

    save_mask(tmp_path / "mask.pt", mask, groups)
    assert load_mask(tmp_path / "mask.pt", groups) == mask
    stored = torch.load(tmp_path / "mask.pt", weights_only=True)
    assert stored == {**mask.to_dict(), "group_roots": list(groups.roots)}


def test_mask_for_other_groups_is_refused(tmp_path):
    _, _, groups = prepared("resnet20", **DIGITS)
    _, _, other_groups = prepared("resnet32", **CIFAR)
    save_mask(tmp_path / "mask.pt", random_mask(groups, 7), groups)
    with pytest.raises(GraphpruneError, match=r"mask\.pt was made for other channel groups"):
        load_mask(tmp_path / "mask.pt", other_groups)


def test_untraceable_model_names_the_failure():
    spec = ModelSpec("torchvision:shufflenet_v2_x1_0", input_size=64)
    with pytest.raises(GraphpruneError, match=r"cannot trace ShuffleNetV2 .*ZeroDivisionError"):
        ChannelGroups(build_model(spec), spec.input_shape)


def test_missing_corrupt_and_foreign_files_name_the_file(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(GraphpruneError, match=r"missing\.pt does not exist"):
        load_pruned(missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(GraphpruneError, match=r"cannot read checkpoint .*corrupt\.pt"):
        load_pruned(corrupt)
    pickled_module = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), pickled_module)  # a pickled module must never be loaded
    with pytest.raises(GraphpruneError, match=r"module\.pt"):
        load_pruned(pickled_module)
    spec, model, groups = prepared("resnet20", **DIGITS)
    baseline = tmp_path / "baseline.pt"
    save_model(baseline, model, spec, {})
    with pytest.raises(GraphpruneError, match=r"baseline\.pt is not a pruned-model file \(missing group_roots"):
        load_pruned(baseline)
    with pytest.raises(GraphpruneError, match=r"baseline\.pt is not a mask file"):
        load_mask(baseline, groups)


def test_changed_groups_or_weights_are_refused(tmp_path):
    spec, model, groups = prepared("resnet20", **DIGITS)
    mask = random_mask(groups, 8)
    path = tmp_path / "model.pt"
    save_pruned(path, spec, mask, prune_model(model, groups, mask), {}, groups)
    stored = torch.load(path, weights_only=True)

    atomic_torch_save({**stored, "group_roots": stored["group_roots"][::-1]}, path)
    with pytest.raises(GraphpruneError, match=r"model\.pt was made for other channel groups .* group 0"):
        load_pruned(path)
    wrong_mask = Mask.full(groups.sizes).to_dict()
    atomic_torch_save({**stored, "mask": wrong_mask}, path)
    with pytest.raises(GraphpruneError, match=r"weights in .*model\.pt do not fit resnet20"):
        load_pruned(path)
    atomic_torch_save({**stored, "mask": {"sizes": [1], "kept": [[0]]}}, path)
    with pytest.raises(GraphpruneError, match=r"model\.pt: mask does not fit this model"):
        load_pruned(path)
