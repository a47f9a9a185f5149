"""Lowers rule-language expressions (AST) to graph nodes in a scope of named values."""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.fx as fx

from ..errors import RuleError
from ..lang import ast as A
from ..lang.builtins import ATTRIBUTES, BINARY, BUILTINS, FUNCTIONS, UNARY, Builtin
from ..lang.diagnostics import error_at as _error_at
from . import prims
from .emitter import Emitter

Value = Any
Thunk = Callable[[], Value]

#: Where a builtin's `lowering` name is looked up ("torch.exp", "prims.stab", "operator.add").
_NAMESPACES: dict[str, Any] = {"torch": torch, "prims": prims, "operator": operator}


def resolve(lowering: str) -> Callable[..., Any] | None:
    """The function a builtin's `lowering` names; None for the functions bound to a node (`node.layer`)."""
    space, _, name = lowering.partition(".")
    if space == "node":
        return None
    return getattr(_NAMESPACES[space], name)


#: Each builtin's compiler-side function, resolved once.
TARGETS: dict[Builtin, Callable[..., Any] | None] = {b: resolve(b.lowering) for b in BUILTINS}

#: `maximum(a, c)` with a constant side is `clamp(a, min=c)`.
_EXTREMUM_BOUND = {torch.maximum: "min", torch.minimum: "max"}


def error_at(node: Any, message: str, hint: str | None = None) -> RuleError:
    """A RuleError at the rule-file position of an AST node (or of a bare `Pos`)."""
    pos = node if isinstance(node, A.Pos) else getattr(node, "pos", None)
    return _error_at(pos, message, hint)


class Scope:
    """Names visible to one body: lazily computed values (thunks), plus defines and locals."""

    def __init__(
        self,
        em: Emitter,
        names: dict[str, Thunk],
        defines: dict[str, A.Expr],
        calls: dict[str, Callable[..., Value]] | None = None,
        where: str = "",
        attr: Callable[[A.Expr, str], Value] | None = None,
        inputs: dict[str, Callable[[int, A.Expr], Value]] | None = None,
    ) -> None:
        self.em = em
        self._thunks = names
        self._defines = defines
        self._values: dict[str, Value] = {}
        self.calls = calls or {}
        self.where = where
        self.attr_hook = attr
        self.inputs = inputs or {}  # `x[j]`, `x0[j]`: the j-th input of a multi-input node
        # conditions known at every position where the value being lowered is used: inside `where(c, a, b)`'s
        # branches, through element-wise operations only (a nested `where(c, p, q)` there is `p` or `q`)
        self._known: dict[fx.Node, bool] = {}

    def lookup(self, name: str, node: A.Expr) -> Value:
        if name in self._values:
            return self._values[name]
        saved, self._known = self._known, {}  # a name's value holds everywhere: no branch facts
        try:
            if name in self._thunks:
                value = self._thunks[name]()
            elif name in self._defines:
                value = self.eval(self._defines[name])
            else:
                raise error_at(node, f"`{name}` is not defined {self.where}".rstrip())
        finally:
            self._known = saved
        self._values[name] = value
        return value

    def assign(self, name: str, value: Value) -> None:
        self._values[name] = value

    # ------------------------------------------------------------------------------------------ evaluation
    def block(self, block: A.Block) -> Value:
        for a in block.assigns:
            self.assign(a.name, self.eval(a.value))
        return self.eval(block.result)

    def eval(self, e: A.Expr) -> Value:
        em = self.em
        saved, em.pos = em.pos, getattr(e, "pos", None) or em.pos
        try:
            return self._eval(e)
        finally:
            em.pos = saved

    def _eval(self, e: A.Expr) -> Value:
        em = self.em
        if isinstance(e, A.Num):
            v = e.value
            return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**31 else v
        if isinstance(e, A.Name):
            return self.lookup(e.id, e)
        if isinstance(e, A.Unary):
            return self.apply(UNARY[e.op], [self.eval(e.operand)], {})
        if isinstance(e, A.Binary):
            return self.apply(BINARY[e.op], [self.eval(e.left), self.eval(e.right)], {})
        if isinstance(e, A.Attr):
            if e.attr in ATTRIBUTES:
                return self.apply(ATTRIBUTES[e.attr], [self.eval(e.value)], {})
            if self.attr_hook is None:
                raise error_at(e, f"unknown attribute `.{e.attr}` {self.where}".rstrip())
            return self.attr_hook(e.value, e.attr)
        if isinstance(e, A.Index):
            if isinstance(e.value, A.Name) and e.value.id in self.inputs:
                return self.inputs[e.value.id](self.eval(e.index), e)
            with self._no_branch_facts():
                return em.call(operator.getitem, self.eval(e.value), self.eval(e.index))
        if isinstance(e, A.Call):
            return self._call(e)
        raise error_at(e, f"cannot evaluate {type(e).__name__}")

    def _sign_part(self, part: str, v: Value) -> Value:
        em = self.em
        if not isinstance(v, fx.Node):
            return {"pos": max(v, 0), "neg": min(v, 0), "abs": abs(v)}[part]
        if v in em.nonneg:  # sign facts: x.neg after a ReLU is zero, x.pos is x
            return 0.0 if part == "neg" else v
        if part == "pos":
            out = em.call(torch.clamp, v, min=0)
        elif part == "neg":
            return em.call(torch.clamp, v, max=0)
        else:
            out = em.call(torch.abs, v)
        em.nonneg.add(out)
        return out

    def _call(self, e: A.Call) -> Value:
        b = FUNCTIONS.get(e.func)
        if b is not None and b.node_bound and e.func in self.calls:
            with self._no_branch_facts():
                return self.calls[e.func](e, self)
        if b is None or b.node_bound:
            raise error_at(e, f"`{e.func}()` is not available {self.where}".rstrip())
        if e.func == "where" and len(e.args) == 3 and not e.kwargs:
            return self.lower_where(b, e)
        with contextlib.nullcontext() if e.func in _ELEMENTWISE else self._no_branch_facts():
            args = [self.eval(a) for a in e.args]
            kwargs = {k: self.eval(v) for k, v in e.kwargs}
        return self.apply(b, args, kwargs)

    @contextlib.contextmanager
    def _no_branch_facts(self) -> Iterator[None]:
        """Lowers a non-element-wise operation's arguments (vjp, sums, indexing) without the branch facts."""
        saved, self._known = self._known, {}
        try:
            yield
        finally:
            self._known = saved

    def _branch(self, c: Value, holds: bool, e: A.Expr) -> Value:
        """`e` lowered where condition `c` is known to be `holds` (a `where` branch)."""
        if not isinstance(c, fx.Node):
            return self.eval(e)
        saved, self._known = self._known, {**self._known, c: holds}
        try:
            return self.eval(e)
        finally:
            self._known = saved

    def lower_where(self, b: Builtin, e: A.Call) -> Value:
        """`where(c, a, b)`: nested selects on the same `c` resolved, a fast select for `abs(d) < k`.

        Inside a branch of `where(c, ...)`, reached through element-wise operations only, `where(c, p, q)` is `p`
        (first branch) or `q` (second): the outer select keeps exactly the positions where that holds. DeepLIFT's
        `where(small, g, R * dy / where(small, 1, d))` so becomes `where(small, g, R * dy / d)`, equal at every
        position it keeps.
        """
        if not FAST_WHERE:
            return self.apply(b, [self.eval(x) for x in e.args], {})
        c = self.eval(e.args[0])
        if isinstance(c, fx.Node) and c in self._known:
            return self.eval(e.args[1] if self._known[c] else e.args[2])
        a = self._branch(c, True, e.args[1])
        other = self._branch(c, False, e.args[2])
        fast = _select_below(self.em, c, a, other)
        if fast is not None:
            return fast
        return self.apply(b, [c, a, other], {})

    # ------------------------------------------------------------------ builtins: one method per `apply` convention
    def apply(self, b: Builtin, args: list[Value], kwargs: dict[str, Value]) -> Value:
        """Lowers builtin `b` on evaluated arguments, by its record's `apply` convention (`apply_<convention>`)."""
        return getattr(self, f"apply_{b.apply}")(b, TARGETS[b], args, kwargs)

    def apply_call(self, b: Builtin, fn: Callable[..., Any], args: list[Value], kwargs: dict[str, Value]) -> Value:
        """`fn(*args, **kwargs)`, folded when every argument is a constant the emitter can fold."""
        return self.em.call(fn, *args, **kwargs)

    def apply_tensor(self, b: Builtin, fn: Callable[..., Any], args: list[Value], kwargs: dict[str, Value]) -> Value:
        """`fn(t)` of a tensor function: a constant argument becomes a 0-d tensor."""
        return self.em.call(fn, _tensor(self.em, args[0]))

    def apply_clamp(self, b: Builtin, fn: Callable[..., Any], args: list[Value], kwargs: dict[str, Value]) -> Value:
        """`clamp(t, lo, hi)` / `clamp(t, min=, max=)`: bounds by position or keyword."""
        lo = args[1] if len(args) > 1 else kwargs.get("min")
        hi = args[2] if len(args) > 2 else kwargs.get("max")
        if lo is not None and hi is not None and isinstance(lo, fx.Node) != isinstance(hi, fx.Node):
            return self.em.call(fn, self.em.call(fn, args[0], min=lo), max=hi)  # torch: both numbers or both tensors
        return self.em.call(fn, args[0], min=lo, max=hi)

    def apply_extremum(self, b: Builtin, fn: Callable[..., Any], args: list[Value], kwargs: dict[str, Value]) -> Value:
        """`maximum(a, b)` / `minimum(a, b)`: a constant side becomes a `clamp` bound."""
        a, c = args
        bound = _EXTREMUM_BOUND[fn]
        if not isinstance(c, fx.Node):
            return self.em.call(torch.clamp, a, **{bound: c})
        if not isinstance(a, fx.Node):
            return self.em.call(torch.clamp, c, **{bound: a})
        return self.em.call(fn, a, c)

    def apply_sign_part(self, b: Builtin, fn: Callable[..., Any], args: list[Value], kwargs: dict[str, Value]) -> Value:
        """`pos`, `neg`, `abs` (functions or attributes), using the sign facts."""
        return self._sign_part(b.name, args[0])

    def apply_identity(self, b: Builtin, fn: Callable[..., Any], args: list[Value], kwargs: dict[str, Value]) -> Value:
        """Unary `+`: the operand itself."""
        return args[0]


#: nested `where`s on one condition resolved, `where(abs(d) < k, ...)` by `prims.select_below`; tests switch it
#: off to compare with the previous lowering
FAST_WHERE = True

#: builtins computed position by position (broadcasting aside): branch facts hold through them
_ELEMENTWISE = frozenset(
    {"stab", "where", "clamp", "maximum", "minimum", "pos", "neg", "abs", "sign", "exp", "log", "sqrt"}
    | {"ones_like", "zeros_like"}
)

#: arithmetic whose result is NaN where an operand is
_NAN_PROPAGATING = (operator.add, operator.sub, operator.mul, operator.truediv, operator.neg)


def _select_below(em: Emitter, c: Value, a: Value, b: Value) -> Value:
    """`prims.select_below(t, k, a, b)` for `where(t < k, a, b)` with `t = abs(d)` and `b` NaN wherever `d` is
    (so the fast select's `a + b` at NaN positions is `b`, as `where` gives); None where that is not shown."""
    if not (isinstance(c, fx.Node) and c.target is operator.lt and len(c.args) == 2 and not c.kwargs):
        return None
    t, k = c.args
    if not (
        isinstance(t, fx.Node)
        and t.target is torch.abs
        and isinstance(k, (int, float))
        and not isinstance(k, bool)
        and k > 0
        and isinstance(a, fx.Node)
        and isinstance(b, fx.Node)
    ):
        return None
    d = t.args[0]
    if not _nan_follows(b, {t, d}):
        return None
    return em.call(prims.select_below, t, float(k), a, b)


def _nan_follows(v: Value, roots: set[Any], depth: int = 8) -> bool:
    """Whether `v` is computed from one of `roots` through NaN-propagating arithmetic only."""
    if v in roots:
        return True
    if depth == 0 or not isinstance(v, fx.Node) or v.target not in _NAN_PROPAGATING:
        return False
    return any(_nan_follows(u, roots, depth - 1) for u in v.args if isinstance(u, fx.Node))


def _tensor(em: Emitter, v: Value) -> Value:
    if isinstance(v, fx.Node):
        return v
    return em.call(torch.as_tensor, float(v))
