"""A representative subset of the library passes every applicable property (the whole library's run is measured
by benchmarks/rule_tests_time.py; it takes minutes)."""

from __future__ import annotations

import pytest

from rulelang.testing import check


@pytest.mark.parametrize(
    "rule, applicable",
    [
        # conserving, linear in R (static: non-negative maps on ReLU nets)
        ("lrp-epsilon", {"conserves", "linear_in_R", "sound"}),
        # nonlinear in R (R.pos at ReLUs): linear_in_R is checked only on models without ReLUs (static analysis)
        ("guided-backprop", set()),
    ],
)
def test_a_library_rule_passes_every_property(rule: str, applicable: set[str], profile: str) -> None:
    results = {r.prop: r for r in check(rule, profile=profile)}
    failed = [str(r) for r in results.values() if r.status == "failed"]
    assert not failed, "\n\n".join(failed)
    assert {"finite", "shape", "batch_independent", "precision", "deterministic", "unmutated"} <= {
        p for p, r in results.items() if r.status == "passed"
    }
    for prop in applicable:
        assert results[prop].status == "passed", str(results[prop])
    assert results["agrees"].status == "not applicable"


def _autograd(model, x, target):  # type: ignore[no-untyped-def]
    import torch

    xr = x.clone().requires_grad_(True)
    out = model(xr.clone())
    (g,) = torch.autograd.grad(out[:, target].sum(), xr)
    return g


def test_agreement_with_a_reference_function(profile: str) -> None:
    (ok,) = check("gradient", ["agrees"], profile=profile, reference=_autograd)
    assert ok.status == "passed", str(ok)
    (bad,) = check("gradient-x-input", ["agrees"], profile=profile, reference=_autograd)
    assert bad.status == "failed" and "ours vs reference" in bad.reason
    assert "reference" in (bad.counterexample or "")
