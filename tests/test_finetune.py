"""Fine-tuning stage: BN recalibration and clear errors for missing inputs (the full run is in the e2e test)."""

import torch
from torch import nn

from graphprune.cli import main
from graphprune.network.evaluate import recalibrate_batch_norm


def test_recalibration_sets_batch_statistics_and_restores_training_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))
    model.train()
    batches = [torch.randn(8, 1, 6, 6) * 3 + 1 for _ in range(3)]
    recalibrate_batch_norm(model, batches)
    bn = model[1]
    activations = torch.cat([model[0](batch) for batch in batches])  # [24, 4, 4, 4]
    assert torch.allclose(bn.running_mean, activations.mean(dim=(0, 2, 3)), atol=1e-5)
    assert bn.momentum == 0.1 and model.training and bn.training and model[3].training


def test_finetune_names_the_command_that_writes_a_missing_input(tiny_config, capsys):
    args = ["finetune", "--config", str(tiny_config), "--experiment", "tiny", "--method", "l1_uniform",
            "--target", "flops0.5"]
    assert main(args) == 2
    assert "baseline/model.pt does not exist; `graphprune pretrain --experiment tiny` writes it" in (
        capsys.readouterr().err)
    assert main(["pretrain", "--config", str(tiny_config), "--experiment", "tiny"]) == 0
    assert main(args) == 2
    assert "l1_uniform/flops0.5/seed3/mask.pt does not exist; `graphprune search --experiment tiny --method l1_uniform" in (
        capsys.readouterr().err)
