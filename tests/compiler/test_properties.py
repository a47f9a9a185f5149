"""Properties of compiled explainers on random models (module, functional, method and in-place call forms).

This found that fx cannot normalise F.conv2d's overloaded arguments (now read by position in ops.py)."""

from __future__ import annotations

import copy

import torch
from hypothesis import given

import rulelang
from rulelang.testing.strategies import models_and_inputs


def _autograd(model, x, target):
    x = x.clone().requires_grad_(True)
    out = model(x)
    (g,) = torch.autograd.grad(out[torch.arange(len(x)), target].sum(), x)
    return g


@given(models_and_inputs())
def test_gradient_rule_equals_autograd(case) -> None:
    model, x = case
    target = model(x).argmax(1)
    ours = rulelang.compile(model, "gradient", example_input=x)(x, target=target)
    assert torch.allclose(ours, _autograd(model, x, target), rtol=1e-9, atol=1e-12)


@given(models_and_inputs())
def test_explanations_are_batch_independent_and_finite(case) -> None:
    model, x = case
    explainer = rulelang.compile(model, "lrp-epsilon-plus", example_input=x)
    whole = explainer(x, target=1)
    assert torch.isfinite(whole).all()
    one_by_one = torch.cat([explainer(x[k : k + 1], target=1) for k in range(len(x))])
    assert torch.allclose(whole, one_by_one, rtol=1e-9, atol=1e-12)


@given(models_and_inputs())
def test_compiling_and_explaining_leave_the_model_alone(case) -> None:
    model, x = case
    before = copy.deepcopy(model.state_dict())
    rulelang.compile(model, "lrp-zplus", example_input=x, cache_parameters=True)(x)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
