"""Properties every well-behaved rule should have, each one function you can call from your own tests.

Every property takes the rule (library name, path or loaded `RuleFile`), an eval-mode model, an input batch
and, optionally, a `target` class, parameter overrides `params` and input `bounds` (passed to `compile` as
`input_bounds`); it returns None or raises `PropertyFailed` naming the failing check and the offending values.

```python
from hypothesis import given
from rulelang.testing import properties, strategies

@given(strategies.models(), strategies.input_specs())
def test_my_rule_is_finite(model, inputs):
    properties.finite("my-rule.yaml", model, inputs.make(model))
```

`rulelang.testing.check(rule)` (and `rulelang test FILE`) runs all of them on random models and shrinks a failure
to a minimal counterexample printed as runnable Python.
"""

from __future__ import annotations

import copy
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import PropertyFailed, RulelangError

Rules = Any  # library name, path, or RuleFile


# ------------------------------------------------------------------------------------------------- helpers
_CACHE: OrderedDict[tuple, tuple[nn.Module, Any]] | None = None


@contextmanager
def caching(size: int = 64) -> Iterator[None]:
    """Within this block, `compile_for_test` reuses explainers of the same model object, rule and parameters."""
    global _CACHE
    outer = _CACHE
    _CACHE = OrderedDict() if outer is None else outer
    try:
        yield
    finally:
        _CACHE = outer
        if outer is None:
            _STATIC.clear()


def compile_for_test(
    rules: Rules,
    model: nn.Module,
    x: torch.Tensor,
    params: dict[str, Any] | None = None,
    bounds: Any = None,
    fresh: bool = False,
) -> Any:
    """`rulelang.compile` (without its meta-tensor shape check: a shape error shows when explaining) plus, for
    rules with `fit:`, statistics fitted on 8 seeded Gaussian batches like `x`.

    Inside `caching()`, an explainer compiled before for the same model object is reused unless `fresh`.
    """
    key = (
        id(model),
        str(getattr(rules, "path", None) or rules),
        tuple(sorted((params or {}).items())),
        bounds,
        x.dtype,
        tuple(x.shape[1:]),
    )
    if _CACHE is not None and not fresh and key in _CACHE and _CACHE[key][0] is model:
        return _CACHE[key][1]
    explainer = _compile(rules, model, x, params, bounds)
    if _CACHE is not None:
        _CACHE[key] = (model, explainer)
        if len(_CACHE) > 64:
            _CACHE.popitem(last=False)
    return explainer


def _compile(rules: Rules, model: nn.Module, x: torch.Tensor, params: Any, bounds: Any) -> Any:
    from ..compiler.explainer import compile as compile_
    from ..compiler.fitting import fit

    try:
        explainer = compile_(model, rules, example_input=x, input_bounds=bounds, check=False, **(params or {}))
    except RulelangError as e:  # e.g. a rule body with a shape error on this model
        raise PropertyFailed("compiles", f"compiling raised {type(e).__name__}: {e}") from None
    if explainer.rules.fit:
        g = torch.Generator().manual_seed(0)
        data = [torch.randn((4, *x.shape[1:]), generator=g, dtype=torch.float64).to(x.dtype) for _ in range(8)]
        fit(explainer, data, progress=False)
    return explainer


def _explain(check: str, explainer: Any, x: torch.Tensor, target: Any, keep: str | None = "all") -> Any:
    """explain(); NaN/inf are left to the `finite` property (keep="all" everywhere: one graph per explainer)."""
    try:
        return explainer.explain(x, target, keep=keep, on_nonfinite="ignore")
    except RulelangError as e:  # e.g. NonFiniteError from an explainer that checks its own output
        raise PropertyFailed(check, f"explaining raised {type(e).__name__}: {e}") from None


_STATIC: dict[int, tuple[Any, Any]] = {}


def _static(explainer: Any) -> Any:
    """`rulelang.analysis.static(explainer)`, remembered per explainer while `caching()` is on."""
    from .. import analysis

    # through the package's lazy attribute: importing the submodule `rulelang.analysis.static` directly would
    # leave the package attribute `static` bound to that module instead of the function
    static = analysis.static
    if isinstance(static, types.ModuleType):
        static = static.static
    hit = _STATIC.get(id(explainer))
    if hit is not None and hit[0] is explainer:
        return hit[1]
    res = static(explainer)
    if _CACHE is not None:
        if len(_STATIC) > 64:
            _STATIC.clear()
        _STATIC[id(explainer)] = (explainer, res)
    return res


def _where(mask: torch.Tensor, *tensors: torch.Tensor, limit: int = 4) -> str:
    """`[index] value (vs value)` for the first entries where `mask` holds."""
    idx = mask.nonzero()[:limit].tolist()
    parts = []
    for i in idx:
        values = " vs ".join(f"{float(t[tuple(i)]):.9g}" for t in tensors)
        parts.append(f"{i}: {values}")
    more = int(mask.sum()) - len(idx)
    return "; ".join(parts) + (f"; ... {more} more" if more > 0 else "")


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float = 0.0) -> torch.Tensor:
    """Mask of entries that differ by more than rtol·max(|a|, |b|) over the whole tensor + atol."""
    scale = float(torch.maximum(a.abs().max(), b.abs().max())) if a.numel() else 0.0
    return (a - b).abs() > rtol * scale + atol


# ----------------------------------------------------------------------------------------------- properties
def finite(
    rules: Rules, model: nn.Module, x: torch.Tensor, target: Any = None, *, params: Any = None, bounds: Any = None
) -> None:
    """The attribution (and every intermediate relevance) has no NaN or infinity."""
    from ..errors import NonFiniteError

    ex = compile_for_test(rules, model, x, params, bounds)
    r = _explain("finite", ex, x, target)
    bad = ~torch.isfinite(r.attribution)
    if bool(bad.any()):
        where = f"the attribution has {int(bad.sum())} non-finite values"
        try:  # the explainer's own check names the first node and the rule line where they appear
            ex.explain(x, target, on_nonfinite="raise")
        except NonFiniteError as e:
            where = str(e)
        raise PropertyFailed("finite", where, _where(bad, r.attribution))


def shape(
    rules: Rules, model: nn.Module, x: torch.Tensor, target: Any = None, *, params: Any = None, bounds: Any = None
) -> None:
    """The attribution has the input's shape and dtype."""
    a = _explain("shape", compile_for_test(rules, model, x, params, bounds), x, target).attribution
    if a.shape != x.shape or a.dtype != x.dtype:
        raise PropertyFailed(
            "shape", f"attribution {tuple(a.shape)} {a.dtype} for input {tuple(x.shape)} {x.dtype}", ""
        )


def batch_independent(
    rules: Rules,
    model: nn.Module,
    x: torch.Tensor,
    target: Any = None,
    *,
    params: Any = None,
    bounds: Any = None,
    rtol: float = 1e-6,
) -> None:
    """Explaining a batch equals explaining each sample alone (relative to the largest attribution entry)."""
    ex = compile_for_test(rules, model, x, params, bounds)
    whole = _explain("batch_independent", ex, x, target).attribution
    tgt = torch.as_tensor(target) if target is not None and not isinstance(target, int) else target
    alone = torch.cat(
        [
            _explain(
                "batch_independent", ex, x[k : k + 1], tgt[k : k + 1] if isinstance(tgt, torch.Tensor) else tgt
            ).attribution
            for k in range(len(x))
        ]
    )
    bad = _close(whole, alone, rtol) | (torch.isfinite(whole) != torch.isfinite(alone))
    if bool(bad.any()):
        raise PropertyFailed(
            "batch_independent",
            "the batch's attribution differs from each sample's alone (batch vs alone)",
            _where(bad, whole, alone),
        )


def precision(
    rules: Rules,
    model: nn.Module,
    x: torch.Tensor,
    target: Any = None,
    *,
    params: Any = None,
    bounds: Any = None,
    rtol: float = 1e-3,
) -> None:
    """float32 agrees with float64 to `rtol` of the largest attribution entry (float32 has ~7 digits; a rule
    that loses more than 4 of them is numerically fragile). Pass a float64 model and input."""
    m64, x64 = (model, x) if x.dtype == torch.float64 else (copy.deepcopy(model).double(), x.double())
    m32, x32 = copy.deepcopy(model).float(), x.float()
    a64 = _explain("precision", compile_for_test(rules, m64, x64, params, bounds), x64, target).attribution
    a32 = _explain("precision", compile_for_test(rules, m32, x32, params, bounds), x32, target).attribution.double()
    bad = _close(a32, a64, rtol) | (torch.isfinite(a32) != torch.isfinite(a64))
    if bool(bad.any()):
        raise PropertyFailed(
            "precision",
            f"float32 differs from float64 by more than {rtol:g} of the largest entry (f32 vs f64)",
            _where(bad, a32, a64),
        )


def deterministic(
    rules: Rules, model: nn.Module, x: torch.Tensor, target: Any = None, *, params: Any = None, bounds: Any = None
) -> None:
    """Two calls, and two compilations, give bitwise identical attributions."""
    ex = compile_for_test(rules, model, x, params, bounds)
    a = _explain("deterministic", ex, x, target).attribution
    b = _explain("deterministic", ex, x, target).attribution
    c = _explain("deterministic", compile_for_test(rules, model, x, params, bounds, fresh=True), x, target).attribution
    for other, what in ((b, "a second call"), (c, "a second compilation")):
        bad = ~((a == other) | (a.isnan() & other.isnan()))
        if bool(bad.any()):
            raise PropertyFailed("deterministic", f"{what} gives a different attribution", _where(bad, a, other))


def conserves(
    rules: Rules,
    model: nn.Module,
    x: torch.Tensor,
    target: Any = None,
    *,
    params: Any = None,
    bounds: Any = None,
    rtol: float = 1e-2,
    atol: float = 1e-9,
    min_seed: float = 1e-4,
) -> str | None:
    """Per sample, the attribution sums to the seed (the relevance `init:` puts on the output).

    Holds for conserving rules on bias-free models (`ModelSpec(bias=False)`) up to the stabilisers, which absorb
    eps/|z| of the relevance at each node; with biases the bias share is absorbed too, and `atol` must allow for
    it. Tolerance: rtol · (|seed| + Σ|attribution|) + atol, per sample: 1% lets stabilisers be (unless some
    |z| < 100·eps) and catches relevance that a rule creates or destroys by its structure (a doubled share,
    α·R where only positive parts exist, a ReLU-only assumption), which is of the order of the relevance itself.
    Samples whose seed is below `min_seed` in magnitude are not checked (there the output itself is within 100·eps
    of zero, eps = 1e-6 being the library's usual stabiliser, and stabilisers take a visible share); returns why
    when no sample is checked.
    """
    ex = compile_for_test(rules, model, x, params, bounds)
    r = _explain("conserves", ex, x, target, keep="all")
    seed = r.relevances[ex.nodes[-1]]
    if isinstance(seed, dict):
        seed = sum(seed.values())
    s = seed.reshape(len(x), -1).sum(1)
    a = r.attribution.reshape(len(x), -1)
    total = a.sum(1)
    checked = s.abs() >= min_seed
    bad = checked & ~((total - s).abs() <= rtol * (s.abs() + a.abs().sum(1)) + atol)
    if bool(bad.any()):
        raise PropertyFailed(
            "conserves", "sum of the attribution != seed, per sample (attribution sum vs seed)", _where(bad, total, s)
        )
    return None if bool(checked.any()) else f"every seed is below {min_seed:g} in magnitude"


def agrees(
    rules: Rules,
    model: nn.Module,
    x: torch.Tensor,
    reference: Callable[..., torch.Tensor],
    target: Any = None,
    *,
    params: Any = None,
    bounds: Any = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
) -> None:
    """The attribution equals `reference(model, x, target)` (your own implementation of the method)."""
    a = _explain("agrees", compile_for_test(rules, model, x, params, bounds), x, target).attribution
    ref = reference(model, x, target).to(a.dtype)
    if ref.shape != a.shape:
        raise PropertyFailed("agrees", f"reference has shape {tuple(ref.shape)}, attribution {tuple(a.shape)}")
    bad = _close(a, ref, rtol, atol)
    if bool(bad.any()):
        raise PropertyFailed(
            "agrees", "the attribution differs from the reference (ours vs reference)", _where(bad, a, ref)
        )


def linear_in_R(
    rules: Rules,
    model: nn.Module,
    x: torch.Tensor,
    target: Any = None,
    *,
    params: Any = None,
    bounds: Any = None,
    at: str | None = None,
    rtol: float = 1e-6,
    only_if_static: bool = False,
) -> str | None:
    """Relevance injected at node `at` (default: the output) propagates linearly: at every node below it,
    f(0.7 R1 - 1.3 R2) = 0.7 f(R1) - 1.3 f(R2) for seeded Gaussian R1, R2 (`target` is unused; `final:` is not
    part of the check). With `only_if_static`, checks only where `rulelang.analysis.static` claims every node
    linear (the soundness of that claim) and otherwise returns why it did not check."""
    ex = compile_for_test(rules, model, x, params, bounds)
    if only_if_static:
        res = _static(ex)
        odd = next((n for n in ex.nodes if res.nodes[n].linearity != "linear"), None)
        if odd is not None:
            r = res.nodes[odd]
            return f"static analysis: `{odd}` ({r.kind}) is {r.linearity}" + (f" - {r.why}" if r.why else "")
    at = at or ex.nodes[-1]
    like = _explain("linear_in_R", ex, x, None).relevances[at]
    like = next(iter(like.values())) if isinstance(like, dict) else like
    g = torch.Generator().manual_seed(1)
    r1 = torch.randn(like.shape, generator=g, dtype=torch.float64).to(x.dtype)
    r2 = torch.randn(like.shape, generator=g, dtype=torch.float64).to(x.dtype)

    def f(r: torch.Tensor) -> dict[str, torch.Tensor]:
        try:
            rel = ex.propagate(x, at=at, relevance=r, keep="all", on_nonfinite="ignore").relevances
        except RulelangError as e:
            raise PropertyFailed("linear_in_R", f"propagating raised {type(e).__name__}: {e}") from None
        out = {}
        for name, v in rel.items():
            for stream, t in v.items() if isinstance(v, dict) else [("", v)]:
                out[name + (f"[{stream}]" if stream else "")] = t
        return out

    mixed, a, b = f(0.7 * r1 - 1.3 * r2), f(r1), f(r2)
    for name in reversed(list(mixed)):  # from the input up: report the lowest node first
        lhs, rhs = mixed[name], 0.7 * a[name] - 1.3 * b[name]
        bad = _close(lhs, rhs, rtol) | (torch.isfinite(lhs) != torch.isfinite(rhs))
        if bool(bad.any()):
            raise PropertyFailed(
                "linear_in_R",
                f"relevance injected at `{at}`, at the output of `{name}`: f(0.7 R1 - 1.3 R2) != 0.7 f(R1) - 1.3 f(R2)"
                " (lhs vs rhs)",
                _where(bad, lhs, rhs),
            )
    return None


def sound(
    rules: Rules,
    model: nn.Module,
    x: torch.Tensor,
    target: Any = None,
    *,
    params: Any = None,
    bounds: Any = None,
    nodes: int = 2,
    columns: int = 3,
) -> str | None:
    """Where `rulelang.analysis.static` says a node's map to its hidden inputs is linear and non-negative
    (non-positive, zero), sampled entries of that map's Jacobian ∂R_in/∂R_out have that sign.

    Checks up to `nodes` such nodes (seeded choice) and `columns` unit vectors e_k injected at each one's
    output on the first sample; an input of the node is measured when the node is its only consumer (else its
    relevance mixes other paths). Returns why nothing was checked, if so.
    """
    ex = compile_for_test(rules, model, x, params, bounds)
    res = _static(ex)
    consumers: dict[Any, int] = {}
    for op in ex.graph.ops:
        for n in op.inputs:
            consumers[n] = consumers.get(n, 0) + 1
    names = {op.out: op.name for op in ex.graph.ops}
    eligible = []
    for op in ex.graph.ops:
        lin, sign, _ = res.nodes[op.name].hidden
        ins = [names[n] for n in op.inputs if n in names and consumers[n] == 1]
        if lin == "linear" and sign in ("nonnegative", "nonpositive", "zero") and ins:
            eligible.append((op, sign, ins))
    if not eligible:
        return "static analysis claims no signed linear map here"
    g = torch.Generator().manual_seed(0)
    x1 = x[:1]
    kept = _explain("sound", ex, x1, None).relevances
    for j in torch.randperm(len(eligible), generator=g)[:nodes].tolist():
        op, sign, ins = eligible[j]
        like = kept[op.name]
        like = next(iter(like.values())) if isinstance(like, dict) else like
        for k in torch.randperm(like.numel(), generator=g)[:columns].tolist():
            e = torch.zeros(like.numel(), dtype=like.dtype)
            e[k] = 1.0
            try:
                rel = ex.propagate(
                    x1, at=op.name, relevance=e.reshape(like.shape), keep="all", on_nonfinite="ignore"
                ).relevances
            except RulelangError as err:
                raise PropertyFailed("sound", f"propagating raised {type(err).__name__}: {err}") from None
            for name in ins:
                v = rel[name]
                for t in v.values() if isinstance(v, dict) else [v]:
                    tol = 1e-9 * float(t.abs().max()) if t.numel() else 0.0
                    bad = {"nonnegative": t < -tol, "nonpositive": t > tol, "zero": t.abs() > tol}[sign]
                    if sign == "zero":
                        bad = t != 0
                    if bool(bad.any()):
                        r = res.nodes[op.name]
                        raise PropertyFailed(
                            "sound",
                            f"static analysis says the map of `{op.name}` ({r.kind}, rule {r.rule_line}) to its "
                            f"inputs is {sign}, but column {k} (unit relevance at output entry {k}) has entries of "
                            f"the other sign at `{name}`",
                            _where(bad, t),
                        )
    return None


def unmutated(
    rules: Rules, model: nn.Module, x: torch.Tensor, target: Any = None, *, params: Any = None, bounds: Any = None
) -> None:
    """Compiling and explaining leave the model (parameters, buffers, mode, output) and the input unchanged."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    training = {n: m.training for n, m in model.named_modules()}
    x_before = x.clone()
    with torch.no_grad():
        out = model(x.clone())
    ex = compile_for_test(rules, model, x, params, bounds)
    _explain("unmutated", ex, x, target)
    changed = [k for k, v in model.state_dict().items() if k not in state or not torch.equal(v, state[k])]
    changed += [f"{n}.training" for n, m in model.named_modules() if training.get(n) != m.training]
    if not torch.equal(x, x_before):
        changed.append("the input x")
    with torch.no_grad():
        if not torch.equal(model(x.clone()), out):
            changed.append("the model's output")
    if changed:
        raise PropertyFailed("unmutated", "compiling and explaining changed the model or input", ", ".join(changed))
