import pytest
import torch

from graphprune.errors import GraphpruneError
from graphprune.models import ModelSpec, build_model

ZOO_MODELS = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg16_bn", "mobilenetv2",
              "torchvision:resnet18"]
# (classes, channels, size) of digits and of CIFAR-10
DATASET_SHAPES = {"digits": (10, 1, 8), "cifar": (10, 3, 32)}


@pytest.mark.parametrize("shape", DATASET_SHAPES.values(), ids=DATASET_SHAPES.keys())
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_model_trains_at_its_dataset_shape(name, shape):
    num_classes, in_channels, input_size = shape
    spec = ModelSpec(name, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
    torch.manual_seed(0)
    model = build_model(spec)
    logits = model(torch.randn(2, *spec.input_shape))
    assert logits.shape == (2, num_classes)
    logits.logsumexp(dim=1).sum().backward()
    # Some BN shifts get an exactly-zero gradient (a later BN cancels them), so check reach, not size.
    without_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert without_grad == []
    first_weight = next(p for p in model.parameters() if p.dim() == 4)
    assert first_weight.grad.abs().sum() > 0


def test_unknown_model_is_a_user_error():
    with pytest.raises(GraphpruneError, match="unknown model 'resnet21'"):
        build_model(ModelSpec("resnet21"))
