"""Interval/sign domain of the static analysis, and the sign facts of model ops (forward values, Jacobians).

An `Iv` is an interval `[lo, hi]` per channel (tuples: one value, or one per channel) plus `nz`: the value
is known never to be 0. Sign sets are derived from it (`signs()`), so `[0, inf]` is "non-negative", `[0, inf]`
with `nz` "positive", `[-inf, inf]` with `nz` "never zero" (what `stab(z, eps)` of a free-sign z gives).
Intervals rather than bare signs let z^B's `x - lo` be proved non-negative when the input bounds are known.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

INF = float("inf")

Vec = tuple[float, ...]  # one value, or one per channel


def _vec(v: Any) -> Vec:
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        flat: list[float] = []
        for t in v:
            flat.extend(_vec(t))
        return tuple(flat) or (0.0,)
    return (float(v),)


def _inv(t: float) -> float:
    return 0.0 if abs(t) == INF else (1.0 / t if t != 0 else INF)


def _mul(a: float, b: float) -> float:
    return 0.0 if a == 0 or b == 0 else a * b  # 0 * inf = 0 for intervals


class Iv:
    """An interval per channel (`lo`, `hi`: tuples of floats, length 1 or one per channel); `nz`: never zero.

    Immutable; its sign set is computed once. Per-channel tuples of different lengths combine through their
    hull (sound)."""

    __slots__ = ("lo", "hi", "nz", "_signs")

    def __init__(self, lo: Vec, hi: Vec, nz: bool = False) -> None:
        self.lo, self.hi = lo, hi
        if not nz:
            nz = all(t > 0 for t in lo) or all(t < 0 for t in hi)
        self.nz = nz
        s = set()
        if any(t < 0 for t in lo):
            s.add(-1)
        if any(t > 0 for t in hi):
            s.add(1)
        if not nz and any(a <= 0 <= b for a, b in zip(lo, hi)):
            s.add(0)
        self._signs = frozenset(s)

    @staticmethod
    def of(lo: Any, hi: Any, nz: bool = False) -> Iv:
        a, b = _vec(lo), _vec(hi)
        if len(a) != len(b):
            if len(a) == 1:
                a = a * len(b)
            elif len(b) == 1:
                b = b * len(a)
            else:
                a, b = (min(a),), (max(b),)
        return Iv(a, b, nz)

    @staticmethod
    def exact(v: Any) -> Iv:
        return Iv.of(v, v)

    def __repr__(self) -> str:
        return f"Iv({self.lo}, {self.hi}{', nz' if self.nz else ''})"

    # ------------------------------------------------------------------------------------------- queries
    def signs(self) -> frozenset[int]:
        return self._signs

    @property
    def nonneg(self) -> bool:
        return -1 not in self._signs

    @property
    def nonpos(self) -> bool:
        return 1 not in self._signs

    @property
    def zero(self) -> bool:
        return self._signs <= {0}

    @property
    def free(self) -> bool:
        return -1 in self._signs and 1 in self._signs

    @property
    def number(self) -> float | None:
        """The exact value when it is one finite number for every channel."""
        v = self.lo[0]
        if all(t == v for t in self.lo) and all(t == v for t in self.hi) and abs(v) != INF:
            return v
        return None

    def word(self) -> str:
        """`zero`, `nonnegative`, `nonpositive` or `mixed` (as the sign of a matrix or a value)."""
        s = self._signs
        if s <= {0}:
            return "zero"
        if -1 not in s:
            return "nonnegative"
        if 1 not in s:
            return "nonpositive"
        return "mixed"

    # ---------------------------------------------------------------------------------------- arithmetic
    def _pair(self, o: Iv) -> tuple[Iv, Iv]:
        if len(self.lo) == len(o.lo):
            return self, o
        if len(self.lo) == 1:
            return Iv(self.lo * len(o.lo), self.hi * len(o.lo), self.nz), o
        if len(o.lo) == 1:
            return self, Iv(o.lo * len(self.lo), o.hi * len(self.lo), o.nz)
        return self.collapse(), o.collapse()

    def __neg__(self) -> Iv:
        return Iv(tuple(-t for t in self.hi), tuple(-t for t in self.lo), self.nz)

    def __add__(self, o: Iv) -> Iv:
        a, b = self._pair(o)
        lo = tuple(-INF if (x == -INF or y == -INF) else x + y for x, y in zip(a.lo, b.lo))
        hi = tuple(INF if (x == INF or y == INF) else x + y for x, y in zip(a.hi, b.hi))
        nz = (a.nz and b.zero) or (b.nz and a.zero)
        nz = nz or ((a.nonneg and b.nonneg) or (a.nonpos and b.nonpos)) and (a.nz or b.nz)
        return Iv(lo, hi, nz)

    def __sub__(self, o: Iv) -> Iv:
        return self + (-o)

    def __mul__(self, o: Iv) -> Iv:
        a, b = self._pair(o)
        lo, hi = [], []
        for al, ah, bl, bh in zip(a.lo, a.hi, b.lo, b.hi):
            ps = (_mul(al, bl), _mul(al, bh), _mul(ah, bl), _mul(ah, bh))
            lo.append(min(ps))
            hi.append(max(ps))
        return Iv(tuple(lo), tuple(hi), a.nz and b.nz)

    def reciprocal(self) -> Iv:
        """1 / self; a denominator that may be 0 gives [-inf, inf]."""
        s = self._signs
        if 0 in s:
            return TOP
        if not s:
            return TOP  # an empty interval: nothing to prove
        if s <= {1}:
            return Iv(tuple(_inv(t) for t in self.hi), tuple(_inv(t) if t > 0 else INF for t in self.lo), True)
        if s <= {-1}:
            return Iv(tuple(_inv(t) if t < 0 else -INF for t in self.hi), tuple(_inv(t) for t in self.lo), True)
        return NONZERO

    def hull(self, o: Iv) -> Iv:
        a, b = self._pair(o)
        return Iv(tuple(map(min, a.lo, b.lo)), tuple(map(max, a.hi, b.hi)), a.nz and b.nz)

    def collapse(self) -> Iv:
        """One interval for every channel."""
        if len(self.lo) == 1:
            return self
        return Iv((min(self.lo),), (max(self.hi),), self.nz)


TOP = Iv.of(-INF, INF)
NONZERO = Iv.of(-INF, INF, True)
NONNEG = Iv.of(0.0, INF)
POS = Iv.of(0.0, INF, True)
NONPOS = Iv.of(-INF, 0.0)
ZERO = Iv.exact(0.0)
ONE = Iv.exact(1.0)
UNIT = Iv.of(0.0, 1.0)  # a 0/1 selection mask


def from_signs(signs: frozenset[int]) -> Iv:
    """The widest interval with these signs."""
    lo = -INF if -1 in signs else 0.0
    hi = INF if 1 in signs else 0.0
    return Iv.of(lo, hi, 0 not in signs and bool(signs))


def matmul(a: Iv, b: Iv) -> Iv:
    """Sign of a sum of products a_ij b_jk (a matrix product, or a linear map applied to a vector)."""
    p = (a.collapse() * b.collapse()).signs()
    if p <= {0}:
        return ZERO
    if -1 in p and 1 in p:
        return TOP
    return from_signs(frozenset(p | {0}))


def convex(a: Iv) -> Iv:
    """Sign of a convex combination (mean, percentile, average pool) of values in `a`."""
    if a.free:
        return TOP
    return a.collapse()


def clamp(a: Iv, lo: float | None, hi: float | None) -> Iv:
    out = a
    if lo is not None:
        out = Iv(tuple(max(t, lo) for t in out.lo), tuple(max(t, lo) for t in out.hi), (out.nz and lo >= 0) or lo > 0)
    if hi is not None:
        out = Iv(tuple(min(t, hi) for t in out.lo), tuple(min(t, hi) for t in out.hi), (out.nz and hi <= 0) or hi < 0)
    return out


def maximum(a: Iv, b: Iv) -> Iv:
    x, y = a._pair(b)
    lo, hi = tuple(map(max, x.lo, y.lo)), tuple(map(max, x.hi, y.hi))
    return Iv(lo, hi, all(t > 0 for t in lo) or (x.nz and y.nz and x.nonpos and y.nonpos))


def minimum(a: Iv, b: Iv) -> Iv:
    return -maximum(-a, -b)


def stab(z: Iv, eps: float | None) -> Iv:
    """`stab(z, eps)` = z + eps * sign(z) with sign(0) = +1: z's sign, never 0 when eps > 0."""
    if eps is None or eps <= 0:
        return z if eps == 0 else TOP
    shift = Iv.exact(eps)
    if z.nonneg:
        return Iv((z + shift).lo, (z + shift).hi, True)
    if z.signs() <= {-1}:
        return Iv((z - shift).lo, (z - shift).hi, True)
    return Iv(tuple(min(t - eps, eps) for t in z.lo), tuple(max(t + eps, -eps) for t in z.hi), True)


def power(a: Iv, p: float | None) -> Iv:
    if p is None:
        return TOP if not a.nonneg else NONNEG
    if p == 1:
        return a
    if p == 0:
        return ONE
    if float(p).is_integer() and int(p) % 2 == 0:
        return POS if a.nz else NONNEG
    if a.nonneg:
        if p < 0:
            return POS if not a.zero else TOP
        return Iv.of(0.0, INF, a.nz)
    if float(p).is_integer() and p > 0:
        return from_signs(a.signs())  # odd powers keep signs
    return TOP


# ------------------------------------------------------------------------------------- model op sign facts
#: Kinds whose Jacobian (w.r.t. every activation input) has non-negative entries: masks, routing, averages,
#: sums. conv/dense/affine have the sign of their weight; everything else is unknown.
JACOBIAN_NONNEG = frozenset({"relu", "maxpool", "avgpool", "reshape", "cat", "add", "dropout", "identity"})
WEIGHTED = frozenset({"conv", "dense", "affine"})

_ACT_NONNEG = frozenset({"sigmoid", "sigmoid_", "softplus", "relu6", "hardsigmoid"})  # outputs >= 0 always
_ACT_SIGN_KEEPING = frozenset({"tanh", "tanh_", "softsign"})  # odd, increasing: the output has the input's sign


def _target_name(node: fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        return type(root.get_submodule(str(node.target))).__name__.lower()
    t = node.target
    return (t if isinstance(t, str) else getattr(t, "__name__", str(t))).lower()


def add_subtracts(node: fx.Node) -> bool:
    """Whether an `add` node may subtract (torch.add's alpha, or a sub form)."""
    if "alpha" in node.kwargs or (node.target is torch.add and len(node.args) > 2):
        return True
    return node.target in (operator.sub, operator.isub, torch.sub) or node.target in ("sub", "sub_", "__sub__")


def _pad_value(node: fx.Node, root: nn.Module) -> float | None:
    """The fill value of a constant pad (0 for other reshapes; None when unknown)."""
    if node.op == "call_module":
        return float(getattr(root.get_submodule(str(node.target)), "value", 0.0) or 0.0)
    if node.op == "call_function" and node.target is F.pad:
        mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
        if mode != "constant":
            return 0.0
        v = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
        return 0.0 if v is None else (float(v) if isinstance(v, (int, float)) else None)
    return 0.0


def kind_forward_sign(kind: str, inputs: list[Iv]) -> Iv:
    """Interval of the output of an op of `kind` whatever its call form (no pads, no subtraction)."""
    hull = inputs[0] if inputs else TOP
    for v in inputs[1:]:
        hull = hull.hull(v)
    if kind == "relu":
        return NONNEG
    if kind in ("dropout", "identity", "cat"):
        return hull
    if kind == "maxpool":
        return hull.collapse()
    if kind == "avgpool":
        return convex(hull)
    if kind == "reshape":
        return Iv.of(hull.lo, hull.hi).collapse().hull(ZERO)
    if kind == "add":
        out = inputs[0]
        for v in inputs[1:]:
            out = out + v
        return out.collapse()
    return TOP


def forward_sign(kind: str, node: fx.Node, root: nn.Module, inputs: list[Iv]) -> Iv:
    """Interval of an op's output from its inputs' intervals (sound: unknown gives TOP); the call form decides
    reshapes (a pad value), adds (a subtraction), softmax (log or not) and activations, the kind the rest."""
    hull = inputs[0] if inputs else TOP
    for v in inputs[1:]:
        hull = hull.hull(v)
    if kind == "reshape":
        pad = _pad_value(node, root)
        return TOP if pad is None else Iv.of(hull.lo, hull.hi).collapse().hull(Iv.exact(pad))
    if kind == "add" and add_subtracts(node):
        return TOP
    if kind == "softmax":
        return NONPOS if "log" in _target_name(node, root) else Iv.of(0.0, 1.0)
    if kind == "activation":
        name = _target_name(node, root)
        if name in _ACT_NONNEG:
            return NONNEG
        if name in _ACT_SIGN_KEEPING:
            return from_signs(hull.signs())
        return TOP
    return kind_forward_sign(kind, inputs)
    return TOP
