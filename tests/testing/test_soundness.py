"""The `sound` and `linear_in_R` properties catch a static analysis that claims too much (a wrong claim is
injected by replacing the analysis' per-node facts)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from rulelang.testing import check_property
from rulelang.testing import properties as P


def _claiming(linearity: str, sign: str | None) -> Any:
    real = P._static

    def fake(explainer: Any) -> Any:
        res = real(explainer)
        nodes = {
            n: replace(r, linearity=linearity, sign=sign, hidden=(linearity, sign, None)) for n, r in res.nodes.items()
        }
        return replace(res, nodes=nodes)

    return fake


def test_a_false_nonnegative_claim_is_refuted_by_a_jacobian_entry(
    profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(P, "_static", _claiming("linear", "nonnegative"))
    r = check_property("gradient", "sound", profile=profile)  # the gradient's maps have signed weights
    assert r.status == "failed", str(r)
    assert "is nonnegative, but column" in r.reason
    assert r.counterexample is not None and "class Net(nn.Module):" in r.counterexample


def test_a_false_linearity_claim_is_refuted(profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "_static", _claiming("linear", "mixed"))
    r = check_property("guided-backprop", "linear_in_R", profile=profile)  # R.pos at every ReLU
    assert r.status == "failed", str(r)
    assert "f(0.7 R1 - 1.3 R2) != 0.7 f(R1) - 1.3 f(R2)" in r.reason
