"""torchvision's Swin window attention inlined with the shapes known (rulelang/graph/windows.py).

Small hand-built Swin blocks (random weights, float64): the inlined graph computes what the wrapped call does
(output and gradient, at another batch size than the example's, with padding, shifts and masks), no opaque op is
left, CP-LRP conserves on a bias-free block, a feature map of another size is refused, and Swin V2's attention
(written in place into its bias) stays one op that LRP rules fail closed on.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torchvision.models.swin_transformer import (
    PatchMerging,
    ShiftedWindowAttention,
    ShiftedWindowAttentionV2,
    SwinTransformerBlock,
)

import rulelang

D = torch.float64
TINY = 1e-12


class Block(nn.Module):
    """A Swin block (or one window attention) on (N, H, W, C) inputs, optionally patch merging, mean-pooled."""

    def __init__(self, c: int, window: int, shift: int, merge: bool = False, attention_only: bool = False) -> None:
        super().__init__()
        if attention_only:
            self.block: nn.Module = ShiftedWindowAttention(c, [window, window], [shift, shift], num_heads=2)
        else:
            self.block = SwinTransformerBlock(c, 2, [window, window], [shift, shift], stochastic_depth_prob=0.0)
        self.merge = PatchMerging(c) if merge else nn.Identity()
        self.head = nn.Linear(2 * c if merge else c, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.merge(self.block(x)).mean((1, 2)))


def _model(seed: int, **kw) -> nn.Module:
    torch.manual_seed(seed)
    model = Block(**kw)
    with torch.no_grad():  # the bias table starts near 0: make the relative position bias matter
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.to(D).eval()


#: (H, W, window, shift): padding and a shift with its mask; no padding; window >= map (shift dropped); no shift
SHAPES = [(6, 6, 4, 2), (8, 8, 4, 2), (3, 5, 4, 2), (5, 7, 4, 0)]


@pytest.mark.parametrize("h, w, window, shift", SHAPES)
@pytest.mark.parametrize("attention_only", [True, False])
def test_inlined_window_attention_computes_the_wrapped_call(h, w, window, shift, attention_only) -> None:
    model = _model(0, c=8, window=window, shift=shift, merge=not attention_only, attention_only=attention_only)
    example = torch.randn(1, h, w, 8, dtype=D)
    x = torch.randn(3, h, w, 8, dtype=D)  # another batch size than the example's
    explainer = rulelang.compile(model, "gradient", example_input=example)
    assert all(str(op.kind) != "other" for op in explainer.graph.ops)
    kinds = [str(op.kind) for op in explainer.graph.ops]
    assert kinds.count("softmax") == 1 and kinds.count("matmul") == 2
    with torch.no_grad():
        torch.testing.assert_close(explainer.explain(x, 1).output, model(x), rtol=1e-12, atol=1e-12)
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(model(xg)[:, 1].sum(), xg)
    torch.testing.assert_close(explainer(x, 1), ref, rtol=1e-10, atol=1e-12)


def test_the_shifted_window_mask_is_a_constant_of_the_traced_model() -> None:
    """With a shift, the mask becomes a buffer holding torchvision's -100 / 0 pattern; without one, none."""
    shifted = rulelang.compile(
        _model(0, c=8, window=4, shift=2), "gradient", example_input=torch.randn(1, 8, 8, 8, dtype=D)
    )
    masks = [b for name, b in shifted.graph.gm.named_buffers() if "constant" in name]
    assert len(masks) == 1
    assert set(masks[0].unique().tolist()) == {-100.0, 0.0}
    plain = rulelang.compile(
        _model(0, c=8, window=4, shift=0), "gradient", example_input=torch.randn(1, 8, 8, 8, dtype=D)
    )
    assert not [name for name, _ in plain.graph.gm.named_buffers() if "constant" in name]


@pytest.mark.parametrize("rule", ["attn-lrp", "cp-lrp", "lrp-epsilon-plus"])
def test_lrp_rules_run_on_a_swin_block(rule: str) -> None:
    model = _model(1, c=8, window=4, shift=2, merge=True)
    x = torch.randn(2, 6, 6, 8, dtype=D)
    r = rulelang.compile(model, rule, example_input=x)(x, 0)
    assert r.shape == x.shape and torch.isfinite(r).all() and r.abs().sum() > 0


def _without_biases(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(getattr(m, "bias", None), nn.Parameter):
            m.register_parameter("bias", None)
    return model


@given(
    size=st.sampled_from([(6, 6), (8, 8), (5, 7)]),
    shift=st.sampled_from([0, 2]),
    seed=st.integers(0, 2**16),
)
def test_cp_lrp_conserves_on_a_bias_free_swin_block(size, shift, seed) -> None:
    """CP-LRP holds the attention weights constant, so the relative position bias and the shifted-window mask
    (added before the softmax) take no relevance; zero padding takes none either (its values are 0)."""
    model = _without_biases(_model(seed, c=8, window=4, shift=shift))
    x = torch.randn(2, *size, 8, dtype=D)
    r = rulelang.compile(model, "cp-lrp", example_input=x, eps=TINY)(x, 2)
    with torch.no_grad():
        seed_sum = model(x)[:, 2]
    torch.testing.assert_close(r.sum((1, 2, 3)), seed_sum, rtol=1e-6, atol=1e-9)


def test_a_feature_map_of_another_size_is_refused() -> None:
    model = _model(0, c=8, window=4, shift=2)
    explainer = rulelang.compile(model, "gradient", example_input=torch.randn(1, 6, 6, 8, dtype=D))
    with pytest.raises(rulelang.RulelangError, match=r"specialised at compile time .*\('B', 6, 6, 8\)"):
        explainer(torch.randn(1, 8, 8, 8, dtype=D), 0)


def test_the_explainer_moves_with_the_mask() -> None:
    """The mask buffer follows `explainer.to(dtype)` like the model's parameters."""
    model = _model(0, c=8, window=4, shift=2)
    x = torch.randn(2, 6, 6, 8, dtype=D)
    explainer = rulelang.compile(model, "gradient", example_input=x)
    explainer.to(torch.float32)
    xf = x.float()
    xg = xf.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(model(xg)[:, 0].sum(), xg)
    out = explainer(xf, 0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


class V2Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = ShiftedWindowAttentionV2(8, [4, 4], [2, 2], num_heads=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x).mean((1, 2))


def test_swin_v2_attention_stays_one_op_and_lrp_fails_closed() -> None:
    """Swin V2's body zeroes a slice of its qkv bias in place and normalises q and k (F.normalize, no rule):
    it is left whole, the gradient still equals autograd, and LRP rules name it."""
    torch.manual_seed(0)
    model = V2Attention().to(D).eval()
    x = torch.randn(2, 6, 6, 8, dtype=D)
    explainer = rulelang.compile(model, "gradient", example_input=x)
    assert [str(op.kind) for op in explainer.graph.ops].count("other") == 1
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(model(xg)[:, 0].sum(), xg)
    torch.testing.assert_close(explainer(x, 0), ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(rulelang.RulelangError, match="shifted_window_attention"):
        rulelang.compile(model, "attn-lrp", example_input=x)
