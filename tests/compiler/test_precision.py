"""bfloat16, float16 and channels_last: the explainer computes in the model's and input's dtype and memory format,
agrees with float32 as closely as the precision allows, and refuses what it cannot run with a clear error.

Tolerances (measured by ``OMP_NUM_THREADS=1 python benchmarks/precision.py --quick``: digits-cnn, 4 test images,
every library rule; and float32 against float64 for the rules below):
- bfloat16/float16: a rule is one forward and one modified backward pass, so its error is measured against the
  error the same precision gives the plain autograd input gradient on the same batch (computed in the test:
  0.14 in bfloat16, 0.06 in float16). Over all library rules the worst per-sample relative L2 error of a rule was
  2.64x the gradient's in bfloat16 (lrp-alpha2-beta1 / lrp-alpha-beta: z+ - z- cancels) and 2.6x in float16
  (lrp-alpha5-beta4), the median 0.6x (bfloat16) and 0.8x (float16). The bound LOW_PRECISION_FACTOR = 3x the
  gradient's error is set from that sweep (the worst rule plus a margin), not from the five rules tested here.
- channels_last: the same float32 arithmetic in another summation order (NHWC convolution kernels): rounding only.
  float32's own relative error against float64 reaches 1.1e-5 on these rules (deeplift-rescale) and the sweep
  measured channels_last vs float32 at <= 1.4e-5 (α-β rules); CHANNELS_LAST_RTOL = 1e-4 is 10x float32's own worst
  error, while a layout bug (a mis-strided or transposed tensor) gives errors of order 1.
"""

from __future__ import annotations

import copy

import pytest
import torch

import rulelang
from rulelang.errors import CompileError, ExplainError, ModelError

LOW_PRECISION_FACTOR = 3.0
CHANNELS_LAST_RTOL = 1e-4
RULES = ["gradient", "lrp-epsilon", "lrp-zplus", "lrp-epsilon-alpha2-beta1", "deeplift-rescale"]


@pytest.fixture(scope="module")
def digits() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = rulelang.builtin_model("digits-cnn")
    xs, ys = rulelang.builtin_data("digits-rgb", split="test")
    return model, xs[:8].float(), ys[:8]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Worst per-sample relative L2 error of a against b (float64)."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    return float(((a - b).norm(dim=1) / b.norm(dim=1)).max())


def _gradient(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).gather(1, t[:, None]).sum(), x)
    return g


@pytest.fixture(scope="module")
def float32_results(digits) -> dict[str, torch.Tensor]:
    model, x, t = digits
    return {rule: rulelang.compile(model, rule, example_input=x)(x, t) for rule in RULES}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_agrees_with_float32_as_well_as_the_gradient_does(digits, float32_results, dtype):
    model, x, t = digits
    low, xl = copy.deepcopy(model).to(dtype), x.to(dtype)
    floor = _rel(_gradient(low, xl, t), _gradient(model, x, t))  # what the precision does to autograd
    assert 0 < floor < 0.5
    rules = RULES if dtype == torch.bfloat16 else ["lrp-epsilon", "lrp-zplus"]
    for rule in rules:
        a = rulelang.compile(low, rule, example_input=xl)(xl, t)
        assert a.dtype == dtype and bool(torch.isfinite(a).all())
        assert _rel(a, float32_results[rule]) <= LOW_PRECISION_FACTOR * floor, rule


def test_moving_a_compiled_explainer_to_bfloat16_follows_the_model(digits, float32_results):
    model, x, t = digits
    ex = rulelang.compile(copy.deepcopy(model), "lrp-zplus", example_input=x)
    ex(x, t)  # builds and fills the parameter cache in float32
    ex.to(torch.bfloat16)
    a = ex(x.bfloat16(), t)
    assert a.dtype == torch.bfloat16
    floor = _rel(_gradient(ex.model, x.bfloat16(), t), _gradient(model, x, t))
    assert _rel(a, float32_results["lrp-zplus"]) <= LOW_PRECISION_FACTOR * floor


@pytest.mark.parametrize("rule", RULES)
def test_channels_last_gives_the_float32_answer(digits, float32_results, rule):
    model, x, t = digits
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    cl_x = x.contiguous(memory_format=torch.channels_last)
    ref = float32_results[rule]
    for m, xx in ((cl_model, cl_x), (cl_model, x), (model, cl_x)):
        a = rulelang.compile(m, rule, example_input=xx)(xx, t)
        assert a.shape == ref.shape and a.dtype == ref.dtype
        assert _rel(a, ref) <= CHANNELS_LAST_RTOL, (rule, m is cl_model, xx.is_contiguous())


def test_a_rule_without_low_precision_kernels_is_refused_at_compile_time(digits):
    model, x, _ = digits
    with pytest.raises(CompileError, match=r"'rectgrad' cannot run in torch.bfloat16: it uses `percentile`"):
        rulelang.compile(copy.deepcopy(model).bfloat16(), "rectgrad", example_input=x.bfloat16())
    with pytest.raises(CompileError, match=r"cannot run in torch.float16: it uses `percentile`"):
        rulelang.compile(copy.deepcopy(model).half(), "rectgrad", example_input=x.half())


def test_moving_such_a_rule_to_low_precision_is_refused_at_the_call(digits):
    model, x, t = digits
    ex = rulelang.compile(copy.deepcopy(model), "rectgrad", example_input=x)
    ex(x, t)
    ex.to(torch.bfloat16)
    with pytest.raises(CompileError, match="percentile"):
        ex(x.bfloat16(), t)


def test_unsupported_dtypes_and_mixed_precision_calls_are_refused(digits):
    model, x, t = digits
    with pytest.raises(ModelError, match="explains in float32, float64, bfloat16 or float16"):
        rulelang.compile(
            copy.deepcopy(model).to(torch.float8_e4m3fn), "lrp-epsilon", example_input=x.to(torch.float8_e4m3fn)
        )
    low = copy.deepcopy(model).bfloat16()
    ex = rulelang.compile(low, "lrp-epsilon", example_input=x.bfloat16())
    with pytest.raises(ExplainError, match=r"x is torch.float32 .* parameters are torch.bfloat16"):
        ex(x, t)
    at = ex.nodes[-3]
    r = torch.ones(x.shape[0], *ex.shapes[at][1:])
    with pytest.raises(ExplainError, match=r"relevance for node .* is torch.float32 .* x is torch.bfloat16"):
        ex.propagate(x.bfloat16(), at=at, relevance=r)
    assert ex.propagate(x.bfloat16(), at=at, relevance=r.bfloat16()).attribution.dtype == torch.bfloat16
