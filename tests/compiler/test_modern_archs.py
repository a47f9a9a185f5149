"""Transformers, ConvNeXt, EfficientNet and timm models (random weights): the gradient rule equals autograd
(float64), and `attn-lrp`, `cp-lrp` and `lrp-epsilon-plus` compile and give finite, non-zero maps.

A few small models run in the default suite; the full torchvision/timm sweep is marked `slow`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
import torchvision
from torch import nn

import rulelang
from rulelang.testing.models import randomize_
from tests.helpers.numeric import assert_output_and_gradient

D = torch.float64
LRP_RULES = ("attn-lrp", "cp-lrp", "lrp-epsilon-plus")


def _tv(name: str, **kw) -> Callable[[], nn.Module]:
    return lambda: torchvision.models.get_model(name, weights=None, **kw)


def _timm(name: str, **kw) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, **kw)


def _small_vit() -> nn.Module:
    return torchvision.models.VisionTransformer(32, 8, 2, 4, 32, 64, num_classes=10)


slow = pytest.mark.slow
#: name -> (constructor, input side)
MODELS = [
    pytest.param("tv-vit-small", _small_vit, 32, id="tv-vit-small"),
    pytest.param("timm-vit-2-blocks", _timm("vit_tiny_patch16_224", img_size=32, depth=2), 32, id="timm-vit-2-blocks"),
    pytest.param("timm-convnext-1111", _timm("convnext_atto", depths=(1, 1, 1, 1)), 32, id="timm-convnext-1111"),
    pytest.param("timm-vit-tiny", _timm("vit_tiny_patch16_224", img_size=32), 32, id="timm-vit-tiny", marks=slow),
    pytest.param("timm-convnext-atto", _timm("convnext_atto"), 64, id="timm-convnext-atto", marks=slow),
    pytest.param("tv-vit-b-16", _tv("vit_b_16"), 224, id="tv-vit-b-16", marks=slow),
    pytest.param("tv-convnext-tiny", _tv("convnext_tiny"), 64, id="tv-convnext-tiny", marks=slow),
    pytest.param("tv-efficientnet-b0", _tv("efficientnet_b0"), 64, id="tv-efficientnet-b0", marks=slow),
    pytest.param("tv-mobilenet-v3-small", _tv("mobilenet_v3_small"), 64, id="tv-mobilenet-v3-small", marks=slow),
    pytest.param("tv-regnet-x-400mf", _tv("regnet_x_400mf"), 64, id="tv-regnet-x-400mf", marks=slow),
    pytest.param("tv-maxvit-t", _tv("maxvit_t"), 224, id="tv-maxvit-t", marks=slow),
    pytest.param("tv-swin-t", _tv("swin_t"), 64, id="tv-swin-t", marks=slow),
    pytest.param("tv-swin-v2-t", _tv("swin_v2_t"), 64, id="tv-swin-v2-t", marks=slow),
    pytest.param("timm-deit-tiny", _timm("deit_tiny_patch16_224", img_size=32), 32, id="timm-deit-tiny", marks=slow),
    pytest.param("timm-efficientnet-b0", _timm("efficientnet_b0"), 64, id="timm-efficientnet-b0", marks=slow),
    pytest.param("timm-resnet18", _timm("resnet18"), 64, id="timm-resnet18", marks=slow),
    pytest.param("timm-regnety-002", _timm("regnety_002"), 64, id="timm-regnety-002", marks=slow),
]


def build(make: Callable[[], nn.Module]) -> nn.Module:
    """Seeded random weights, random BatchNorm statistics, and no all-zero layer (ViT heads start at zero)."""
    torch.manual_seed(0)
    model = make()
    randomize_(model, 0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and not m.weight.any():
                m.weight.normal_(0.0, 0.1)
    return model.to(D).eval()


@pytest.mark.parametrize("name, make, side", MODELS)
def test_modern_architecture(name: str, make: Callable[[], nn.Module], side: int) -> None:
    torch.set_num_threads(1)
    model = build(make)
    x = torch.randn(1, 3, side, side, dtype=D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = int(model(x).argmax(1))
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(model(xg)[0, target], xg)
    ours = rulelang.compile(model, "gradient", example_input=x)(x, target)
    assert ref.abs().sum() > 0
    rel = ((ours - ref).norm() / ref.norm()).item()
    assert rel < 1e-6, f"{name}: gradient differs from autograd by {rel:.2e}"
    for rule in LRP_RULES:
        r = rulelang.compile(model, rule, example_input=x)(x, target)
        assert r.shape == x.shape
        assert torch.isfinite(r).all(), f"{name}, {rule}: non-finite attribution"
        assert r.abs().sum() > 0, f"{name}, {rule}: all-zero attribution"


@slow
@pytest.mark.parametrize("name", ["swin_t", "swin_v2_t"])
def test_swin_window_attention_is_inlined(name: str) -> None:
    """torchvision's Swin wraps its window attention (and patch merging) with torch.fx.wrap; rulelang inlines each
    call with the shapes known (rulelang/graph/windows.py): no opaque op is left, and the traced graph computes
    the model's output at another batch size than the example's (64x64: padding, shifted windows, and stages
    where the shift drops to 0). What the pass cannot rebuild stays whole: tests/compiler/test_swin.py."""
    model = build(_tv(name))
    explainer = rulelang.compile(model, "gradient", example_input=torch.randn(1, 3, 64, 64, dtype=D))
    kinds = [str(op.kind) for op in explainer.graph.ops]
    assert "other" not in kinds
    assert kinds.count("softmax") == 12 and kinds.count("matmul") == 24
    x = torch.randn(2, 3, 64, 64, dtype=D)
    with torch.no_grad():
        torch.testing.assert_close(explainer.explain(x, 0).output, model(x), rtol=1e-12, atol=1e-12)


class SDPABlock(nn.Module):
    """Hand-written attention through F.scaled_dot_product_attention with a float mask buffer."""

    def __init__(self, d: int = 8, heads: int = 2, tokens: int = 5) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.register_buffer("mask", torch.randn(tokens, tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)
        return self.proj(out.transpose(1, 2).flatten(2)).mean(1)


class MHABlock(nn.Module):
    """nn.MultiheadAttention in sequence-first layout, with a boolean key padding mask buffer."""

    def __init__(self, d: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads)
        self.register_buffer("padding", torch.tensor([[False, False, False, True, False]] * 2))  # batch 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.attn(x, x, x, key_padding_mask=self.padding)
        return out.mean(0)


@pytest.mark.parametrize("block, shape", [(SDPABlock, (2, 5, 8)), (MHABlock, (5, 2, 8))])
def test_attention_decomposition_matches_the_fused_call(block: type[nn.Module], shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = block().to(D).eval()
    x = torch.randn(*shape, dtype=D)
    explainer = rulelang.compile(model, "gradient", example_input=x)
    kinds = [str(op.kind) for op in explainer.graph.ops]
    assert kinds.count("matmul") == 2 and kinds.count("softmax") == 1
    assert_output_and_gradient(explainer, model, x, 0, rtol=1e-9)
    r = rulelang.compile(model, "attn-lrp", example_input=x)(x, 0)
    assert torch.isfinite(r).all() and r.abs().sum() > 0


def test_causal_attention_is_refused_clearly() -> None:
    class Causal(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.scaled_dot_product_attention(x, x, x, is_causal=True).mean(1)

    with pytest.raises(rulelang.RulelangError, match="is_causal"):
        rulelang.compile(Causal(), "gradient", example_input=torch.randn(1, 4, 8))
