import pytest
import torch

from graphprune.checkpoint import (
    atomic_torch_save,
    atomic_write_json,
    load_checkpoint,
    load_model,
    save_model,
)
from graphprune.errors import GraphpruneError
from graphprune.models import ModelSpec, build_model


def test_atomic_writes_leave_only_the_target_file(tmp_path):
    atomic_write_json({"b": 1, "a": [1, 2]}, tmp_path / "sub" / "metrics.json")
    atomic_torch_save({"x": torch.ones(2)}, tmp_path / "sub" / "state.pt")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["metrics.json", "state.pt"]
    assert torch.equal(load_checkpoint(tmp_path / "sub" / "state.pt")["x"], torch.ones(2))


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "state.pt"
    atomic_torch_save({"version": 1}, path)
    with pytest.raises(RuntimeError, match="cannot pickle this"):
        atomic_torch_save({"version": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_missing_and_corrupt_checkpoints_name_the_file(tmp_path):
    with pytest.raises(GraphpruneError, match="absent.pt does not exist"):
        load_checkpoint(tmp_path / "absent.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(GraphpruneError, match="cannot read checkpoint .*corrupt.pt"):
        load_checkpoint(corrupt)


def test_model_round_trip_restores_outputs(tmp_path):
    spec = ModelSpec("resnet20", num_classes=4, in_channels=1, input_size=8)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    save_model(tmp_path / "model.pt", model, spec, {"note": "test"})
    restored = load_model(tmp_path / "model.pt")
    images = torch.randn(3, 1, 8, 8)
    assert restored.spec == spec and restored.meta == {"note": "test"}
    assert torch.equal(restored.model(images), model(images))
