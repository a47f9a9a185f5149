"""`explainer.compile()` / `rulelang.compile(..., torch_compile=...)`: the explain graph runs through torch.compile
without graph breaks, gives the eager result, and keeps every eager guarantee (clear errors for bad arguments, a
changed parameter is seen).

Backends: `eager` (dynamo's capture only: what decides graph breaks) for the sweep over every library rule,
`aot_eager` (AOT autograd's functionalized, decomposed graph) for the numerical comparisons; inductor (C++
code generation, ~100 s cold per graph on the CI machine) only in the `slow` test and in
benchmarks/compile_mode.py.
"""

from __future__ import annotations

import copy

import pytest
import torch

import rulelang
from rulelang.compiler.explainer import dynamo_friendly, target_tensor
from rulelang.compiler.keys import EXPLAIN
from rulelang.errors import ExplainError
from rulelang.lang.library import list_rules

BOUNDED = {"lrp-zbox", "lrp-epsilon-gamma-box", "dtd-bounded"}
EAGER_FULLGRAPH = {"backend": "eager", "fullgraph": True}
AOT_FULLGRAPH = {"backend": "aot_eager", "fullgraph": True}


@pytest.fixture(scope="module")
def digits() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = rulelang.builtin_model("digits-cnn")
    xs, ys = rulelang.builtin_data("digits-rgb", split="test")
    return model, xs[:4].float(), ys[:4]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _pair(model, rule, x, options):
    """An eager explainer and a compiled one for `rule` (fitted rules fitted once on `x`, shared)."""
    kw = {"input_bounds": (float(x.min()), float(x.max()))} if rule in BOUNDED else {}
    eager = rulelang.compile(model, rule, example_input=x, **kw)
    fitted = None
    if eager.rules.fit:
        rulelang.fit(eager, x, progress=False)
        fitted = {tuple(k.split("__", 1)): v for k, v in eager.fitted.named_buffers()}
    compiled = rulelang.compile(model, rule, example_input=x, torch_compile=options, fitted=fitted, **kw)
    return eager, compiled


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> None:
    """float32 agreement: elementwise within rtol of the result's scale (max |b|)."""
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max().clamp_min(1e-30)))


@pytest.mark.parametrize("rule", list_rules())
def test_every_library_rule_compiles_as_one_graph(digits, rule):
    """fullgraph=True makes any graph break an error: the compiled call runs, and equals eager."""
    model, x, t = digits
    eager, compiled = _pair(model, rule, x, EAGER_FULLGRAPH)
    assert compiled.compiled and not eager.compiled
    _close(compiled(x, t), eager(x, t), rtol=1e-6)


def test_dynamo_counts_one_graph_and_zero_breaks(digits):
    """torch._dynamo.explain of the graph `compile()` compiles, for a per-sample, an int and a None target: one
    graph, no break. (``torch.compile(explainer)`` would also trace the Python-side checks and break at them: 8
    breaks here, see benchmarks/compile_mode.py; why `explainer.compile()` is the documented path.)"""
    model, x, t = digits
    ex = rulelang.compile(model, "lrp-zplus", example_input=x)
    derive, names = ex.hoisted_graph(EXPLAIN)
    hoisted = dict(zip(names, derive(*ex.hoisted_inputs(EXPLAIN))))
    gm = dynamo_friendly(ex.build(EXPLAIN))
    for target in (t, 3, None):
        with torch.no_grad():
            report = torch._dynamo.explain(gm.forward)(x, target_tensor(target, x), **hoisted)
        assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons
        torch._dynamo.reset()


@pytest.mark.parametrize("rule", ["lrp-zplus", "deeplift-rescale"])
def test_aot_compiled_equals_eager_with_batchnorm_and_residuals(rule):
    """digits-resnet: folded BatchNorm (hoisted into the parameter cache) and residual adds; AOT autograd's
    decompositions reorder float32 arithmetic, so equality is to float32 rounding (rtol 1e-4 of the scale)."""
    model = rulelang.builtin_model("digits-resnet")
    xs, ys = rulelang.builtin_data("digits-rgb", split="test")
    x, t = xs[:4].float(), ys[:4]
    eager, compiled = _pair(model, rule, x, AOT_FULLGRAPH)
    _close(compiled(x, t), eager(x, t), rtol=1e-4)


def test_propagate_and_keep_compile_too(digits):
    model, x, t = digits
    eager, compiled = _pair(model, "lrp-epsilon", x, AOT_FULLGRAPH)
    at = eager.nodes[-3]
    r = torch.randn(x.shape[0], *eager.shapes[at][1:], generator=torch.Generator().manual_seed(0))
    a, b = compiled.propagate(x, at=at, relevance=r, keep="all"), eager.propagate(x, at=at, relevance=r, keep="all")
    _close(a.attribution, b.attribution, rtol=1e-4)
    _close(compiled(x), eager(x), rtol=1e-4)  # target None: the predicted class, traced as argmax
    assert a.relevances.keys() == b.relevances.keys()
    for k in b.relevances:
        _close(a.relevances[k], b.relevances[k], rtol=1e-4)


def test_weight_edit_after_compiling_is_seen(digits):
    """lrp-zplus hoists w.pos of every layer out of the compiled graph: an in-place edit (version counter) and a
    replaced parameter both recompute it, and the compiled result follows the new weights."""
    model, x, t = digits
    model = copy.deepcopy(model)
    _, compiled = _pair(model, "lrp-zplus", x, AOT_FULLGRAPH)
    before = compiled(x, t)
    conv = model.features[0]
    with torch.no_grad():
        conv.weight.mul_(-1.0)
    after_edit = compiled(x, t)
    _close(after_edit, rulelang.compile(model, "lrp-zplus", example_input=x)(x, t), rtol=1e-4)
    assert (after_edit - before).abs().max() > 1e-3 * before.abs().max()
    conv.weight = torch.nn.Parameter(torch.randn_like(conv.weight), requires_grad=False)
    after_replace = compiled(x, t)
    _close(after_replace, rulelang.compile(model, "lrp-zplus", example_input=x)(x, t), rtol=1e-4)
    assert (after_replace - after_edit).abs().max() > 1e-3 * after_edit.abs().max()


def _message(fn) -> str:
    with pytest.raises(ExplainError) as info:
        fn()
    return str(info.value)


BAD_CALLS = [
    lambda ex, x: ex(x, 10),  # class out of range
    lambda ex, x: ex(x, [1, 2, 3, 12]),  # one entry out of range, in a per-sample list
    lambda ex, x: ex(x, torch.tensor([1.0, 2.0, 3.0, 4.0])),  # a float tensor
    lambda ex, x: ex(x, [1, 2]),  # wrong length
    lambda ex, x: ex(x[0], 1),  # no batch dimension
    lambda ex, x: ex(x.double(), 1),  # wrong dtype
    lambda ex, x: ex(x[:, :, :16], 1),  # wrong spatial size: fails inside the graph
    lambda ex, x: ex.explain(x, 1, keep=["no_such_node"]),
]


def test_bad_arguments_get_the_eager_errors(digits):
    model, x, t = digits
    eager, compiled = _pair(model, "lrp-epsilon", x, AOT_FULLGRAPH)
    compiled(x, t)  # compiled once, so that a bad call meets a compiled graph
    for bad in BAD_CALLS:
        assert _message(lambda: bad(compiled, x)) == _message(lambda: bad(eager, x))


def test_compile_can_be_turned_off_and_options_are_checked(digits):
    model, x, t = digits
    ex = rulelang.compile(model, "gradient", example_input=x)
    assert ex.compile(**EAGER_FULLGRAPH) is ex and ex.compiled
    first = ex(x, t)
    ex.compile(False)
    assert not ex.compiled
    torch.testing.assert_close(ex(x, t), first)
    with pytest.raises(ExplainError, match="torch_compile must be"):
        rulelang.compile(model, "gradient", example_input=x, torch_compile="yes")


def test_bad_torch_compile_options_fail_clearly(digits):
    model, x, t = digits
    ex = rulelang.compile(model, "gradient", example_input=x, torch_compile={"backend": "no-such-backend"})
    with pytest.raises(ExplainError, match="torch.compile failed.*no-such-backend"):
        ex(x, t)


@pytest.mark.slow
def test_inductor_compiled_equals_eager(digits):
    model, x, t = digits
    eager, compiled = _pair(model, "lrp-epsilon", x, {"fullgraph": True})
    _close(compiled(x, t), eager(x, t), rtol=1e-4)
