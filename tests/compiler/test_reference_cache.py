"""The zeros reference pass of `reference: zeros` rules (DeepLIFT) is computed once per weights and per-sample input
shape/dtype/device, in the parameter cache, when the caller passes no reference: results are bit-identical to the
uncached path, weight edits and other input sizes are seen, and a caller's reference keeps the per-call path."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torchvision

import rulelang
from rulelang.compiler.explainer import dynamo_friendly, target_tensor
from rulelang.compiler.keys import EXPLAIN

#: the explain graph whose zeros reference pass is computed in the parameter cache
REF = dataclasses.replace(EXPLAIN, cached_reference=True)

DEEPLIFT = ["deeplift-rescale", "deeplift-ablation", "deeplift-reveal-cancel"]


def _digits(name: str, dtype: torch.dtype) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = copy.deepcopy(rulelang.builtin_model(name)).to(dtype)
    xs, ys = rulelang.builtin_data("digits-rgb", split="test")
    return model, xs[:3].to(dtype), ys[:3]


def _resnet18(dtype: torch.dtype) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval().to(dtype)
    for m in model.modules():  # non-trivial BatchNorm statistics, so that folding matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 32, 32, dtype=dtype, generator=torch.Generator().manual_seed(1))
    return model, x, torch.tensor([1, 7])


MODELS = {
    "digits-cnn": lambda d: _digits("digits-cnn", d),
    "digits-resnet": lambda d: _digits("digits-resnet", d),
    "resnet18": _resnet18,
}


def _uncached(model, rule, x, t, **kw) -> rulelang.Explanation:
    return rulelang.compile(model, rule, example_input=x, cache_parameters=False).explain(x, t, **kw)


def _same(a: rulelang.Explanation, b: rulelang.Explanation) -> None:
    assert torch.equal(a.output, b.output)
    assert torch.equal(a.attribution, b.attribution)
    assert a.relevances.keys() == b.relevances.keys()
    for k, v in b.relevances.items():
        u = a.relevances[k]
        if isinstance(v, dict):
            assert all(torch.equal(u[s], v[s]) for s in v), k
        else:
            assert torch.equal(u, v), k


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("rule", DEEPLIFT)
def test_cached_reference_is_bit_identical(rule, name, dtype):
    model, x, t = MODELS[name](dtype)
    ex = rulelang.compile(model, rule, example_input=x)
    assert ex.cache_bytes == 0
    got = ex.explain(x, t, keep="all")
    cached = [k for k in ex._caches if k.cached_reference]
    assert cached and REF not in cached  # keep="all" has its own graph
    _same(got, _uncached(model, rule, x, t, keep="all"))
    _same(ex.explain(x, t, keep="all"), got)  # second call: from the cache
    # the per-call graph no longer runs the reference pass: it reads it from the cache
    gm = ex.build(cached[0])
    assert "reference_input" not in gm.code and "reference_input" in ex.build(EXPLAIN).code
    assert ex.cache_bytes > 0


def _counting(ex: rulelang.Explainer) -> list[int]:
    """Counts the runs of the cached reference pass of `ex`'s explain graph."""
    cache = ex._caches[REF]
    calls = [0]
    derive = cache.derive

    def run(*args):
        calls[0] += 1
        return derive(*args)

    cache.derive = run  # type: ignore[assignment]
    return calls


@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet"])
def test_weight_edits_are_seen(name):
    """In-place edits (version counter) and replaced parameters, of convs (digits-resnet's folded into BatchNorm,
    digits-cnn's called as modules in the reference pass), of the first dense layer, and of BatchNorm statistics."""
    model, x, t = _digits(name, torch.float64)
    ex = rulelang.compile(model, "deeplift-rescale", example_input=x)
    ex(x, t)
    calls = _counting(ex)
    ex(x, t)
    assert calls[0] == 0  # nothing changed: the reference pass is not rerun
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for layer in (convs[0], convs[-1], linears[0]):
        with torch.no_grad():
            layer.weight.add_(0.1)
            if layer.bias is not None:
                layer.bias.add_(1.0)
        before = calls[0]
        _same(ex.explain(x, t), _uncached(model, "deeplift-rescale", x, t))
        assert calls[0] == before + 1
    convs[1].weight = torch.nn.Parameter(torch.randn_like(convs[1].weight))
    linears[0].bias = torch.nn.Parameter(torch.randn_like(linears[0].bias))
    _same(ex.explain(x, t), _uncached(model, "deeplift-rescale", x, t))
    if name == "digits-resnet":
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        with torch.no_grad():
            bn.running_var.mul_(3.0)
        _same(ex.explain(x, t), _uncached(model, "deeplift-rescale", x, t))


def test_other_input_size_dtype_and_batch():
    model, x, t = _resnet18(torch.float64)
    ex = rulelang.compile(model, "deeplift-rescale", example_input=x)
    ex(x, t)
    calls = _counting(ex)
    ex(x[:1], t[:1])
    assert calls[0] == 0  # another batch size: the same batch-1 reference
    big = torch.randn(2, 3, 48, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    small_bytes = ex.cache_bytes
    _same(ex.explain(big, t), _uncached(model, "deeplift-rescale", big, t))
    assert calls[0] == 1 and ex.cache_bytes > small_bytes
    _same(ex.explain(x, t), _uncached(model, "deeplift-rescale", x, t))
    assert calls[0] == 2


def test_caller_reference_keeps_the_per_call_path_and_cache_off():
    model, x, t = _digits("digits-resnet", torch.float64)
    ex = rulelang.compile(model, "deeplift-rescale", example_input=x)
    ref = torch.rand_like(x[:1], generator=torch.Generator().manual_seed(3))
    _same(ex.explain(x, t, reference=ref), _uncached(model, "deeplift-rescale", x, t, reference=ref))
    assert not any(k.cached_reference for k in [*ex._caches, *ex._built])
    # a zeros reference given explicitly equals the cached one
    zeros = torch.zeros_like(x[:1])
    assert torch.equal(ex(x, t, reference=zeros), ex(x, t))
    off = rulelang.compile(model, "deeplift-rescale", example_input=x, cache_parameters=False)
    off(x, t)
    assert off.cache_bytes == 0 and not any(k.cached_reference for k in off._built)
    ex.refresh()
    assert ex.cache_bytes == 0


def test_cached_reference_graph_has_no_graph_break():
    model, x, t = _digits("digits-resnet", torch.float32)
    ex = rulelang.compile(model, "deeplift-rescale", example_input=x)
    ex(x, t)
    gm = dynamo_friendly(ex.build(REF))
    hoisted = ex._hoisted(REF, x)
    torch._dynamo.reset()
    try:
        with torch.no_grad():
            report = torch._dynamo.explain(gm.forward)(x, target_tensor(t, x), None, **hoisted)
    finally:
        torch._dynamo.reset()
    assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons


def test_module_calls_in_the_reference_pass_are_keyed_by_their_parameters():
    """A module called in the reference pass reads its weights itself (no `get_attr` input): the cache key covers
    its parameters (in-place edit, replacement), and `x`'s per-sample shape."""
    from rulelang.compiler import prims
    from rulelang.compiler.hoist import ParameterCache, split_static

    root = torch.nn.Module()
    root.lin = torch.nn.Linear(4, 4).double()
    g = torch.fx.Graph()
    x = g.placeholder("x")
    x0 = g.call_function(prims.reference_input, (x, None, "zeros"))
    y0 = g.call_module("lin", (x0,))
    g.output(g.call_function(torch.sub, (x, y0)))
    gm = torch.fx.GraphModule(root, g)
    derive, names, targets = split_static(gm, root, x0)
    assert derive is not None and targets == [] and "lin" not in gm.code
    cache = ParameterCache(derive, names, targets, root, sample=True)
    inp = torch.randn(2, 4, dtype=torch.float64)

    def check() -> None:
        expected = inp - root.lin(torch.zeros(1, 4, dtype=torch.float64))
        assert torch.equal(gm(inp, **cache.values(inp)), expected)

    check()
    with torch.no_grad():
        root.lin.bias.add_(1.0)
    check()
    root.lin.bias = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    check()
    assert cache.values(inp)[names[0]].shape == (1, 4)
    with pytest.raises(RuntimeError):  # another per-sample shape reruns the pass (and here fails in the module)
        cache.values(torch.randn(2, 5, dtype=torch.float64))


@pytest.mark.parametrize("rule", DEEPLIFT)
def test_propagate_uses_the_cached_reference_too(rule):
    model, x, _ = _digits("digits-resnet", torch.float64)
    ex = rulelang.compile(model, rule, example_input=x)
    off = rulelang.compile(model, rule, example_input=x, cache_parameters=False)
    at = ex.nodes[-4]
    r = torch.randn(x.shape[0], *ex.shapes[at][1:], dtype=x.dtype, generator=torch.Generator().manual_seed(4))
    _same(ex.propagate(x, at=at, relevance=r, keep="all"), off.propagate(x, at=at, relevance=r, keep="all"))
    assert any(k.mode == "propagate" and k.cached_reference for k in ex._caches)
