"""Deliberately broken rules are caught, each with a minimal counterexample that is runnable Python."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rulelang.testing import PropertyFailed, check_property

from .conftest import BROKEN


def _layers(code: str) -> int:
    return code.count("nn.Conv2d(") + code.count("nn.Linear(")


def _reproduces(code: str) -> PropertyFailed:
    """Running the counterexample script raises the property's failure again."""
    with pytest.raises(PropertyFailed) as info:
        exec(compile(code, "<counterexample>", "exec"), {"__name__": "counterexample"})
    return info.value


def test_zplus_without_a_stabilizer_is_not_finite(profile: str) -> None:
    r = check_property(str(BROKEN / "zplus-no-stabilizer.yaml"), "finite", profile=profile)
    assert r.status == "failed", str(r)
    assert "non-finite" in r.reason and "nan" in r.reason.lower()
    assert r.counterexample is not None
    assert _layers(r.counterexample) <= 2, r.counterexample  # shrunk: 0/0 needs one dead layer at most
    assert _reproduces(r.counterexample).check == "finite"


def test_doubling_relevance_at_adds_breaks_the_declared_conservation(profile: str) -> None:
    r = check_property(str(BROKEN / "doubling-add.yaml"), "conserves", profile=profile)
    assert r.status == "failed", str(r)
    code = r.counterexample or ""
    assert "bias=False" in code  # conservation is checked on bias-free models
    assert "x = x + " in code or "torch.add(" in code or "y += x" in code  # the shrunk model still has an add
    assert _layers(code) <= 4, code
    assert _reproduces(code).check == "conserves"


def test_the_intact_base_of_the_doubling_rule_conserves(profile: str) -> None:
    """Control: lrp-epsilon itself conserves on the same bias-free models (so the add is what breaks it)."""
    from rulelang.testing import runner

    forced = replace(runner.PROPERTIES["conserves"], applies=lambda rf, ref: None)
    assert check_property("lrp-epsilon", forced, profile=profile).status == "passed"


def test_a_relevance_dependent_stabiliser_is_caught_as_nonlinear(profile: str) -> None:
    rule = str(BROKEN / "relative-epsilon.yaml")
    r = check_property(rule, "linear_in_R", profile=profile, assume_linear=True)
    assert r.status == "failed", str(r)
    assert "f(0.7 R1 - 1.3 R2)" in r.reason
    assert _layers(r.counterexample or "") <= 2, r.counterexample
    # the static analysis is not fooled: it never claims this rule linear, so the default run does not check it
    assert check_property(rule, "linear_in_R", profile=profile).status == "not applicable"


def test_a_batch_wide_mean_leaks_between_samples(profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The language's `mean` is per sample; the same rule with a batch-wide `mean` primitive is caught."""
    rule = str(BROKEN / "mean-epsilon.yaml")
    assert check_property(rule, "batch_independent", profile=profile).status == "passed"

    from rulelang.compiler import evaluate

    mean = next(b for b in evaluate.TARGETS if b.name == "mean")
    monkeypatch.setitem(evaluate.TARGETS, mean, lambda t: t.mean().expand(t.shape[:1] + (1,) * (t.dim() - 1)))
    r = check_property(rule, "batch_independent", profile=profile)
    assert r.status == "failed", str(r)
    assert "batch vs alone" in r.reason
    assert _layers(r.counterexample or "") <= 2, r.counterexample
    assert _reproduces(r.counterexample or "").check == "batch_independent"


def test_a_property_failure_names_the_check_and_values() -> None:
    from rulelang.testing import properties
    from rulelang.testing.strategies import InputSpec, ModelSpec

    model = ModelSpec(channels=1, size=4, head="flatten", bias=False).build()
    x = InputSpec("zeros").make(model)
    with pytest.raises(PropertyFailed) as info:
        properties.finite(str(BROKEN / "zplus-no-stabilizer.yaml"), model, x, target=0)
    assert info.value.check == "finite" and "[0, 0, 0, 0]" in info.value.offending
