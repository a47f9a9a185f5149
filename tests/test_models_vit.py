"""The built-in vision transformer `digits-vit`: trained weights that fit, test accuracy >= 95 %, weights < 5 MB,
and the transformer rules explain it (its attention traced as matmul / softmax / matmul)."""

from __future__ import annotations

import torch

import rulelang
from rulelang.models import weights_path


def test_digits_vit_accuracy_and_size() -> None:
    model = rulelang.builtin_model("digits-vit")
    x, y = rulelang.builtin_data("digits-rgb", split="test")
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy >= 0.95, f"digits-vit test accuracy {accuracy:.4f}"
    assert weights_path("digits-vit").stat().st_size < 5e6


def test_digits_vit_is_explained_by_the_transformer_rules() -> None:
    model = rulelang.builtin_model("digits-vit").double()
    x, y = rulelang.builtin_data("digits-rgb", split="test")
    x, y = x[:4].double(), y[:4]
    grad = rulelang.compile(model, "gradient", example_input=x)
    kinds = [str(op.kind) for op in grad.graph.ops]
    assert kinds.count("matmul") == 6 and kinds.count("softmax") == 3 and "norm" in kinds
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(model(xg)[torch.arange(4), y].sum(), xg)
    torch.testing.assert_close(grad(x, y), ref, rtol=1e-9, atol=1e-12)
    for rule in ("attn-lrp", "cp-lrp", "lrp-epsilon-plus"):
        r = rulelang.compile(model, rule, example_input=x)(x, y)
        assert r.shape == x.shape and torch.isfinite(r).all() and r.abs().sum() > 0, rule
