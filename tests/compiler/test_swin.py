"""torchvision's Swin window attention inlined with the shapes known (rulelang/graph/windows.py).

Small hand-built Swin V1 and V2 blocks (random weights, float64): the inlined graph computes what the wrapped call
does (output and gradient, at another batch size than the example's, with padding, shifts and masks), no opaque
op is left, CP-LRP conserves on bias-free blocks, a feature map of another size is refused, and a wrapped body the
pass cannot rebuild (an in-place write into an activation, a constant sized by the batch) stays one op that the LRP
rules fail closed on. F.normalize (Swin V2's cosine attention) as a norm with its scale held constant.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torchvision.models.swin_transformer import (
    PatchMerging,
    PatchMergingV2,
    ShiftedWindowAttention,
    ShiftedWindowAttentionV2,
    SwinTransformerBlock,
    SwinTransformerBlockV2,
)

import rulelang
import rulelang.graph.windows as windows
from tests.helpers.numeric import assert_output_and_gradient, input_gradient

D = torch.float64
TINY = 1e-12


class Block(nn.Module):
    """A Swin (V1 or V2) block, or one window attention, on (N, H, W, C) inputs, optionally patch merging,
    mean-pooled."""

    def __init__(
        self, c: int, window: int, shift: int, merge: bool = False, attention_only: bool = False, v2: bool = False
    ) -> None:
        super().__init__()
        ws, ss = [window, window], [shift, shift]
        if attention_only:
            self.block: nn.Module = (ShiftedWindowAttentionV2 if v2 else ShiftedWindowAttention)(c, ws, ss, 2)
        else:
            self.block = (SwinTransformerBlockV2 if v2 else SwinTransformerBlock)(c, 2, ws, ss)
        self.merge = (PatchMergingV2 if v2 else PatchMerging)(c) if merge else nn.Identity()
        self.head = nn.Linear(2 * c if merge else c, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.merge(self.block(x)).mean((1, 2)))


def _model(seed: int, **kw) -> nn.Module:
    torch.manual_seed(seed)
    model = Block(**kw)
    with torch.no_grad():  # the bias table starts near 0: make the relative position bias matter
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                p.uniform_(1.0, 3.0)  # V2: log of the cosine attention's temperature (clamped at log 100)
            else:
                p.normal_(0.0, 0.5)
    return model.to(D).eval()


#: (H, W, window, shift): padding and a shift with its mask; no padding; window >= map (shift dropped); no shift
SHAPES = [(6, 6, 4, 2), (8, 8, 4, 2), (3, 5, 4, 2), (5, 7, 4, 0)]


@pytest.mark.parametrize("h, w, window, shift", SHAPES)
@pytest.mark.parametrize("attention_only", [True, False], ids=["attention", "block"])
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_inlined_window_attention_computes_the_wrapped_call(h, w, window, shift, attention_only, v2) -> None:
    model = _model(0, c=8, window=window, shift=shift, merge=not attention_only, attention_only=attention_only, v2=v2)
    example = torch.randn(1, h, w, 8, dtype=D)
    x = torch.randn(3, h, w, 8, dtype=D)  # another batch size than the example's
    explainer = rulelang.compile(model, "gradient", example_input=example)
    assert all(str(op.kind) != "other" for op in explainer.graph.ops)
    kinds = [str(op.kind) for op in explainer.graph.ops]
    assert kinds.count("softmax") == 1 and kinds.count("matmul") == 2
    assert_output_and_gradient(explainer, model, x, 1, rtol=1e-10, output_rtol=1e-12)


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
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_lrp_rules_run_on_a_swin_block(rule: str, v2: bool) -> None:
    model = _model(1, c=8, window=4, shift=2, merge=True, v2=v2)
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
    v2=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_cp_lrp_conserves_on_a_bias_free_swin_block(size, shift, v2, seed) -> None:
    """CP-LRP holds the attention weights constant, so the relative position bias and the shifted-window mask
    (added before the softmax) take no relevance; zero padding takes none either (its values are 0); V2's
    F.normalize with its scale held constant is linear."""
    model = _without_biases(_model(seed, c=8, window=4, shift=shift, v2=v2))
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


def _zero_first_channel(x: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y[..., 0] = 0.0  # an in-place write into an activation
    return y


def _batch_sized_constant(x: torch.Tensor) -> torch.Tensor:
    return x + x.new_ones(x.shape)  # a constant whose size depends on the batch


def _add_in_place(x: torch.Tensor) -> torch.Tensor:
    y = x * 2.0
    y += 1.0  # an augmented assignment (in place in eager mode)
    return y


torch.fx.wrap("_zero_first_channel")
torch.fx.wrap("_batch_sized_constant")
torch.fx.wrap("_add_in_place")


class Wrapped(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.which = fn.__name__
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # called by name: fx.wrap patches the module's globals
        if self.which == "_zero_first_channel":
            return self.lin(_zero_first_channel(x))
        if self.which == "_add_in_place":
            return self.lin(_add_in_place(x))
        return self.lin(_batch_sized_constant(x))


@pytest.mark.parametrize("fn", [_zero_first_channel, _add_in_place, _batch_sized_constant])
def test_a_body_that_cannot_be_rebuilt_stays_one_op_and_lrp_fails_closed(fn, monkeypatch) -> None:
    """The pass leaves a wrapped call whole when its body writes into an activation in place (item assignment,
    `+=`) or builds a constant whose size depends on the batch: the gradient still equals autograd (the call is replayed), and the LRP rules name the op."""
    targets = {**windows.wrapped_targets(), fn: "a test function"}
    monkeypatch.setattr(windows, "wrapped_targets", lambda: targets)
    torch.manual_seed(0)
    model = Wrapped(fn).to(D).eval()
    x = torch.rand(2, 4, dtype=D) + 0.1
    explainer = rulelang.compile(model, "gradient", example_input=x)
    assert [str(op.kind) for op in explainer.graph.ops] == ["other", "dense"]
    torch.testing.assert_close(explainer(x, 0), input_gradient(model, x, 0), rtol=1e-12, atol=1e-12)
    with pytest.raises(rulelang.RulelangError, match=fn.__name__):
        rulelang.compile(model, "attn-lrp", example_input=x)


class Normalize(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=self.dim)


def test_normalize_with_its_scale_held_constant() -> None:
    """x = (3, 4): y = x / 5 = (0.6, 0.8); target 1 seeds R = (0, 0.8); the norm rule x * vjp_frozen(R / y) with
    1/||x|| held is x * (R / y) / 5 = (0, 0.8): all of R stays on x_1 (a fixed linear scaling)."""
    x = torch.tensor([[3.0, 4.0]], dtype=D)
    r = rulelang.compile(Normalize(-1), "attn-lrp", example_input=x, eps=TINY)(x, 1)
    torch.testing.assert_close(r, torch.tensor([[0.0, 0.8]], dtype=D))


def test_normalize_over_another_dim_is_a_located_error() -> None:
    x = torch.randn(1, 3, 4, dtype=D)
    with pytest.raises(rulelang.RulelangError, match="F.normalize"):
        rulelang.compile(Normalize(1), "attn-lrp", example_input=x)
