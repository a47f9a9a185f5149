"""Fitting PatternNet statistics: the one-pass estimators against a direct computation from the formulas."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import rulelang
from rulelang.errors import RulelangError


def reference_pattern(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, relu_mask: bool) -> torch.Tensor:
    """a_j = cov_j / (w_j . cov_j) with cov_j = E_m[x y_j] - E_m[x] E[y_j], written out unit by unit."""
    y = x @ w.T
    z = y + b
    pattern = torch.zeros_like(w)
    for j in range(w.shape[0]):
        m = (z[:, j] > 0) if relu_mask else torch.ones(len(x), dtype=torch.bool)
        xm = x[m]
        cov = (xm * y[m, j : j + 1]).mean(0) - xm.mean(0) * y[:, j].mean()
        pattern[j] = cov / (w[j] @ cov)
    return pattern


def test_dense_patterns_match_the_formula() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double().eval()
    batches = [torch.randn(50, 6, dtype=torch.float64) for _ in range(3)]
    explainer = rulelang.fit("pattern-net", model, batches, progress=False)
    x = torch.cat(batches)
    got = dict(explainer.fitted.named_buffers())
    ref0 = reference_pattern(x, model[0].weight, model[0].bias, relu_mask=True)
    h = torch.relu(model[0](x))
    ref2 = reference_pattern(h, model[2].weight, model[2].bias, relu_mask=False)  # no ReLU after the logits
    assert torch.allclose(got["pattern___0"], ref0, atol=1e-10)
    assert torch.allclose(got["pattern___2"], ref2, atol=1e-10)
    # PatternNet's backward uses the pattern instead of W: at the last layer R_in = A^T R
    e = explainer.explain(batches[0][:2], target=1, keep="all")
    r_out = e.relevances["_2"]
    assert torch.allclose(e.relevances["_1"], r_out @ ref2, atol=1e-8)


def test_conv_patterns_match_the_formula() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 5, 2)).double().eval()
    x = torch.randn(20, 2, 5, 5, dtype=torch.float64)
    explainer = rulelang.fit("pattern-net", model, [x[:10], x[10:]], progress=False)
    patches = nn.functional.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 18)  # every position a sample
    ref = reference_pattern(patches, conv.weight.reshape(3, -1), conv.bias, relu_mask=True).reshape(3, 2, 3, 3)
    assert torch.allclose(dict(explainer.fitted.named_buffers())["pattern___0"], ref, atol=1e-10)


def test_fit_is_required_saved_and_loaded(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    x = torch.randn(16, 4, dtype=torch.float64)
    explainer = rulelang.compile(model, "pattern-attribution", example_input=x)
    with pytest.raises(RulelangError, match="rulelang.fit"):
        explainer(x)
    rulelang.fit(explainer, [x], progress=False)
    path = tmp_path / "patterns.pt"
    explainer.save_fitted(path)
    again = rulelang.compile(model, "pattern-attribution", example_input=x, fitted=path)
    assert torch.equal(again(x, target=0), explainer(x, target=0))
    (tmp_path / "bad.pt").write_bytes(b"not a file")
    with pytest.raises(RulelangError, match="cannot read"):
        rulelang.compile(model, "pattern-attribution", example_input=x, fitted=tmp_path / "bad.pt")
    other = nn.Sequential(nn.Linear(4, 2)).double()
    with pytest.raises(RulelangError, match="do not fit"):
        rulelang.compile(other, "pattern-attribution", example_input=x, fitted=path)
