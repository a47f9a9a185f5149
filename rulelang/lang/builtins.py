"""The primitives of rule bodies, one `Builtin` record each: functions, operators and attributes.

A record is everything the system knows about a primitive: its signature (arity, keywords, usage text), the
contexts that may call it, how the compiler lowers it, its value in `require:` expressions, and its entry in the
static analysis's transfer table. The language side stays torch-free, so the lowering is a *name*: the compiler
(rulelang/compiler/evaluate.py) resolves ``lowering`` ("torch.exp", "prims.stab", "operator.add") to the function
the explaining graph calls, and calls it with the argument convention ``apply`` names (Lark's calculator maps
operator names to methods the same way). `tests/lang/test_builtins.py` checks that every record is complete.

Adding a primitive: one record below (plus a leaf function in rulelang/compiler/prims.py when torch has none, and
an ``apply`` convention in evaluate.py only when none of the existing ones fits).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Context = Literal["rule", "forward", "init", "final"]
Apply = Literal["call", "tensor", "clamp", "extremum", "sign_part", "identity", "node"]

#: Every body context (rule bodies, `forward:`, `init:`, `final:`); `define:` expressions take the context of use.
CONTEXTS: tuple[Context, ...] = ("rule", "forward", "init", "final")


@dataclass(frozen=True)
class Builtin:
    """One primitive of the rule language.

    Attributes:
        name: the function name, operator symbol or attribute name as written in a rule.
        form: "function" (`f(a, k=v)`), "operator" (`a + b`, `-a`) or "attribute" (`a.pos`).
        min_args, max_args: positional arity (operators: 1 unary, 2 binary; attributes: 1, the base).
        keywords: keyword arguments it accepts.
        usage: how to call it (error hints).
        contexts: the body contexts that may use it.
        lowering: the compiler-side function, by name ("torch.exp", "prims.stab", "operator.add"; "node.layer"
            for the functions bound to the current node's op, which the lowering scope provides).
        apply: the argument convention the compiler calls `lowering` with: "call" (as written), "tensor" (a
            constant argument becomes a 0-d tensor), "clamp" (bounds by position or keyword), "extremum" (a
            constant side becomes a clamp bound), "sign_part" (uses the compile-time sign facts), "identity" (the
            argument itself), "node" (bound to the node's op: `layer`, `vjp`).
        transfer: key of its rule in the static analysis's transfer table (`TRANSFER` in rulelang/analysis/: sign
            and linearity of the result from those of the arguments): the function name, the operator symbol,
            `u-`/`u+`/`u~` for unary operators; `t.pos` shares the key of `pos(t)`.
        optional: names of the optional positional arguments, in order, each also accepted as a keyword
            (`clamp(t, lo, hi)` or `clamp(t, min=lo, max=hi)`).
        needs_optional: at least one optional argument must be given (by position or keyword).
        keywords_need_weights: keywords substitute the node's weights (only for parametric kinds).
        scalar: the function on floats that `require:` expressions use (None: not allowed in `require:`).
        doc: one line on what it computes.
    """

    name: str
    form: Literal["function", "operator", "attribute"]
    min_args: int
    max_args: int
    lowering: str
    transfer: str
    apply: Apply = "call"
    keywords: tuple[str, ...] = ()
    usage: str = ""
    contexts: tuple[Context, ...] = CONTEXTS
    optional: tuple[str, ...] = ()
    needs_optional: bool = False
    keywords_need_weights: bool = False
    scalar: Callable[..., Any] | None = None
    doc: str = ""

    @property
    def node_bound(self) -> bool:
        """Whether it applies the current node's op (so only rule bodies and `forward:` can call it)."""
        return self.apply == "node"


def _fn(name: str, n: int | tuple[int, int], lowering: str, usage: str, doc: str, **kw: Any) -> Builtin:
    lo, hi = (n, n) if isinstance(n, int) else n
    kw.setdefault("transfer", name)
    return Builtin(name, "function", lo, hi, lowering, usage=usage, doc=doc, **kw)


def _sign_of(v: float) -> float:
    return math.copysign(1.0, v) if v != 0 else 0.0


_FUNCTION_LIST = [
    _fn(
        "layer",
        1,
        "node.layer",
        "layer(t, w=..., b=...)",
        "applies the node's op to t (weights substituted by w=, b=)",
        apply="node",
        keywords=("w", "b"),
        contexts=("rule", "forward"),
        keywords_need_weights=True,
    ),
    _fn(
        "vjp",
        1,
        "node.vjp",
        "vjp(s, w=..., b=...)",
        "the vector-Jacobian product of the node's op with s (weights substituted by w=, b=)",
        apply="node",
        keywords=("w", "b"),
        contexts=("rule",),
        keywords_need_weights=True,
    ),
    _fn(
        "vjp_frozen",
        1,
        "node.vjp_frozen",
        "vjp_frozen(s)",
        "vjp(s) with the node's input statistics held at their forward values (norms: the scale 1/std or 1/rms, "
        "so the norm is a linear map; products a * b, A @ B: the gate factor - a softmax or sigmoid-type output - "
        "gets 0 and the other the full vjp, with no gate each gets vjp / 2; every other kind: vjp(s))",
        apply="node",
        contexts=("rule",),
        transfer="vjp",
    ),
    _fn(
        "uniform",
        1,
        "node.uniform",
        "uniform(t)",
        "t divided by the node's number of activation inputs (the uniform rule on products: a * b and A @ B "
        "give each factor half; a product with a constant gives its one input all)",
        apply="node",
        contexts=("rule",),
        transfer="u+",
    ),
    _fn("stab", 2, "prims.stab", "stab(z, eps)", "z + eps * sign(z), sign(0) = +1 (stabilised denominators)"),
    _fn("where", 3, "torch.where", "where(c, a, b)", "a where c holds, else b"),
    _fn(
        "clamp",
        (1, 3),
        "torch.clamp",
        "clamp(t, lo, hi) or clamp(t, min=..., max=...)",
        "t limited to [lo, hi]",
        apply="clamp",
        keywords=("min", "max"),
        optional=("min", "max"),
        needs_optional=True,
    ),
    _fn("percentile", 2, "prims.percentile", "percentile(t, q)", "the q-th percentile of each sample's entries"),
    _fn("maximum", 2, "torch.maximum", "maximum(a, b)", "element-wise maximum", apply="extremum", scalar=max),
    _fn("minimum", 2, "torch.minimum", "minimum(a, b)", "element-wise minimum", apply="extremum", scalar=min),
    _fn("pos", 1, "torch.clamp", "pos(t)", "the positive part max(t, 0)", apply="sign_part"),
    _fn("neg", 1, "torch.clamp", "neg(t)", "the negative part min(t, 0)", apply="sign_part"),
    _fn("abs", 1, "torch.abs", "abs(t)", "|t|", apply="sign_part", scalar=abs),
    _fn("sign", 1, "torch.sign", "sign(t)", "-1, 0 or +1", apply="tensor", scalar=_sign_of),
    _fn("exp", 1, "torch.exp", "exp(t)", "e ** t", apply="tensor", scalar=math.exp),
    _fn("log", 1, "torch.log", "log(t)", "natural logarithm", apply="tensor", scalar=math.log),
    _fn("sqrt", 1, "torch.sqrt", "sqrt(t)", "square root", apply="tensor", scalar=math.sqrt),
    _fn("ones_like", 1, "torch.ones_like", "ones_like(t)", "ones shaped like t", apply="tensor"),
    _fn("zeros_like", 1, "torch.zeros_like", "zeros_like(t)", "zeros shaped like t", apply="tensor"),
    _fn("sum", 1, "prims.per_sample_sum", "sum(t)", "each sample's sum, broadcastable to t", apply="tensor"),
    _fn("mean", 1, "prims.per_sample_mean", "mean(t)", "each sample's mean, broadcastable to t", apply="tensor"),
    _fn("max", 1, "prims.per_sample_max", "max(t)", "each sample's maximum, broadcastable to t", apply="tensor"),
    _fn("min", 1, "prims.per_sample_min", "min(t)", "each sample's minimum, broadcastable to t", apply="tensor"),
]


def _op(symbol: str, n: int, lowering: str, doc: str, apply: Apply = "call") -> Builtin:
    usage = f"{symbol}a" if n == 1 else f"a {symbol} b"
    transfer = f"u{symbol}" if n == 1 else symbol  # the analysis keys unary operators `u-`, `u+`, `u~`
    return Builtin(symbol, "operator", n, n, lowering, transfer, apply=apply, usage=usage, doc=doc)


_OPERATOR_LIST = [
    _op("+", 2, "operator.add", "sum"),
    _op("-", 2, "operator.sub", "difference"),
    _op("*", 2, "operator.mul", "product"),
    _op("/", 2, "operator.truediv", "quotient"),
    _op("**", 2, "operator.pow", "power"),
    _op("==", 2, "operator.eq", "equal (a boolean mask)"),
    _op("!=", 2, "operator.ne", "not equal (a boolean mask)"),
    _op("<", 2, "operator.lt", "less than (a boolean mask)"),
    _op("<=", 2, "operator.le", "at most (a boolean mask)"),
    _op(">", 2, "operator.gt", "greater than (a boolean mask)"),
    _op(">=", 2, "operator.ge", "at least (a boolean mask)"),
    _op("&", 2, "operator.and_", "both masks"),
    _op("|", 2, "operator.or_", "either mask"),
    _op("-", 1, "operator.neg", "negation"),
    _op("+", 1, "operator.pos", "the operand itself", apply="identity"),
    _op("~", 1, "operator.invert", "mask complement"),
]

_ATTRIBUTE_LIST = [
    Builtin(a, "attribute", 1, 1, f.lowering, f.transfer, apply="sign_part", usage=f"t.{a}", doc=f.doc)
    for f in _FUNCTION_LIST
    if (a := f.name) in ("pos", "neg", "abs")
]

#: Functions by name.
FUNCTIONS: dict[str, Builtin] = {b.name: b for b in _FUNCTION_LIST}
#: Binary operators by symbol.
BINARY: dict[str, Builtin] = {b.name: b for b in _OPERATOR_LIST if b.max_args == 2}
#: Unary operators by symbol.
UNARY: dict[str, Builtin] = {b.name: b for b in _OPERATOR_LIST if b.max_args == 1}
#: Attributes any expression has; any other attribute of `x` / `x[i]` reads a declared forward quantity.
ATTRIBUTES: dict[str, Builtin] = {b.name: b for b in _ATTRIBUTE_LIST}
#: Every record.
BUILTINS: tuple[Builtin, ...] = (*_FUNCTION_LIST, *_OPERATOR_LIST, *_ATTRIBUTE_LIST)

#: Functions bound to the current node's op, and the contexts that may call them (derived).
NODE_FUNCTIONS: dict[str, tuple[Context, ...]] = {b.name: b.contexts for b in _FUNCTION_LIST if b.node_bound}
#: Attribute names (derived).
ELEMENTWISE_ATTRS: tuple[str, ...] = tuple(ATTRIBUTES)
#: Functions `require:` expressions may call, on floats (derived).
SCALAR_FUNCTIONS: dict[str, Callable[..., Any]] = {b.name: b.scalar for b in _FUNCTION_LIST if b.scalar is not None}

Signature = Builtin  # former name of the signature part


def arity_text(sig: Builtin) -> str:
    """`1 positional argument`, `1 to 3 positional arguments`."""
    n = sig.min_args if sig.min_args == sig.max_args else f"{sig.min_args} to {sig.max_args}"
    word = "argument" if sig.max_args == 1 else "arguments"
    return f"{n} positional {word}"
