"""Lowers rule-language expressions (AST) to graph nodes in a scope of named values."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx

from ..errors import RuleError
from ..lang import ast as A
from ..lang.diagnostics import error_at as _error_at
from . import prims
from .emitter import Emitter

Value = Any
Thunk = Callable[[], Value]

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "**": operator.pow,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "&": operator.and_,
    "|": operator.or_,
}

_UNARY_FUNCS: dict[str, Callable[..., Any]] = {
    "sign": torch.sign,
    "exp": torch.exp,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "ones_like": torch.ones_like,
    "zeros_like": torch.zeros_like,
    "sum": prims.per_sample_sum,
    "mean": prims.per_sample_mean,
    "max": prims.per_sample_max,
    "min": prims.per_sample_min,
}


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

    def lookup(self, name: str, node: A.Expr) -> Value:
        if name in self._values:
            return self._values[name]
        if name in self._thunks:
            value = self._thunks[name]()
        elif name in self._defines:
            value = self.eval(self._defines[name])
        else:
            raise error_at(node, f"`{name}` is not defined {self.where}".rstrip())
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
            v = self.eval(e.operand)
            if e.op == "-":
                return em.call(operator.neg, v)
            if e.op == "~":
                return em.call(operator.invert, v)
            return v
        if isinstance(e, A.Binary):
            left, right = self.eval(e.left), self.eval(e.right)
            return em.call(_BINARY[e.op], left, right)
        if isinstance(e, A.Attr):
            if e.attr in ("pos", "neg", "abs"):
                return self._sign_part(e.attr, self.eval(e.value))
            if self.attr_hook is None:
                raise error_at(e, f"unknown attribute `.{e.attr}` {self.where}".rstrip())
            return self.attr_hook(e.value, e.attr)
        if isinstance(e, A.Index):
            if isinstance(e.value, A.Name) and e.value.id in self.inputs:
                return self.inputs[e.value.id](self.eval(e.index), e)
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
        em, f = self.em, e.func
        if f in self.calls:
            return self.calls[f](e, self)
        args = [self.eval(a) for a in e.args]
        kwargs = {k: self.eval(v) for k, v in e.kwargs}
        if f in ("pos", "neg", "abs"):
            return self._sign_part(f, args[0])
        if f in _UNARY_FUNCS:
            return em.call(_UNARY_FUNCS[f], _tensor(em, args[0]))
        if f == "stab":
            return em.call(prims.stab, args[0], args[1])
        if f == "where":
            return em.call(torch.where, *args)
        if f == "clamp":
            lo = args[1] if len(args) > 1 else kwargs.get("min")
            hi = args[2] if len(args) > 2 else kwargs.get("max")
            return em.call(torch.clamp, args[0], min=lo, max=hi)
        if f == "percentile":
            return em.call(prims.percentile, args[0], args[1])
        if f in ("maximum", "minimum"):
            a, b = args
            if not isinstance(b, fx.Node):
                return em.call(torch.clamp, a, **({"min": b} if f == "maximum" else {"max": b}))
            if not isinstance(a, fx.Node):
                return em.call(torch.clamp, b, **({"min": a} if f == "maximum" else {"max": a}))
            return em.call(torch.maximum if f == "maximum" else torch.minimum, a, b)
        raise error_at(e, f"`{f}()` is not available {self.where}".rstrip())


def _tensor(em: Emitter, v: Value) -> Value:
    if isinstance(v, fx.Node):
        return v
    return em.call(torch.as_tensor, float(v))
