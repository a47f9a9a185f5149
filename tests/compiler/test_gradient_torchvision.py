"""The `gradient` rule equals torch.autograd on torchvision's architectures (random weights, float64)."""

from __future__ import annotations

import pytest
import torch
import torchvision

import rulelang
from tests.helpers.models import randomize_bn

pytestmark = pytest.mark.slow  # oracle sweeps over torchvision models (fast loop: -m "not slow")

MODELS = [
    "vgg11",
    "vgg16_bn",
    "resnet18",
    "resnet50",
    "densenet121",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "shufflenet_v2_x0_5",
    "squeezenet1_0",
    "regnet_x_400mf",
    "googlenet",
    "convnext_tiny",
]


def autograd_of_logit(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    out = model(x)
    (g,) = torch.autograd.grad(out[torch.arange(len(x)), target].sum(), x)
    return g


@pytest.mark.parametrize("name", MODELS)
def test_gradient_equals_autograd(name: str) -> None:
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    model = randomize_bn(getattr(torchvision.models, name)(weights=None, **kwargs)).double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        target = model(x).argmax(1)  # a live logit (ReLU-ended heads such as squeezenet's can be exactly 0)
    explainer = rulelang.compile(model, "gradient", example_input=x)
    ours = explainer(x, target=target)
    ref = autograd_of_logit(model, x, target)
    assert ref.abs().max() > 0, "degenerate oracle: the gradient is zero"
    rel = ((ours - ref).norm() / ref.norm()).item()
    assert rel < 1e-6, f"{name}: relative error {rel:.3e}"
