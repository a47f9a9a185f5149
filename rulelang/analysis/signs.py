"""Interval/sign domain of the static analysis, and the sign facts of model ops (forward values, Jacobians).

An `Iv` is an interval `[lo, hi]` per channel (numpy arrays, scalar or one entry per channel) plus `nz`: the value
is known never to be 0. Sign sets are derived from it (`signs()`), so `[0, inf]` is "non-negative", `[0, inf]`
with `nz` "positive", `[-inf, inf]` with `nz` "never zero" (what `stab(z, eps)` of a free-sign z gives).
Intervals rather than bare signs let z^B's `x - lo` be proved non-negative when the input bounds are known.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

INF = float("inf")


def _arr(v: Any) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a if a.ndim <= 1 else a.reshape(-1)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast two per-channel arrays; channel counts that disagree collapse to their hull (sound)."""
    try:
        x, y = np.broadcast_arrays(a, b)
        return x, y
    except ValueError:
        return np.asarray(a.min() if a.size else 0.0), np.asarray(b.min() if b.size else 0.0)


@dataclass(frozen=True, eq=False)
class Iv:
    """An interval per channel; `nz`: never zero."""

    lo: np.ndarray
    hi: np.ndarray
    nz: bool = False

    @staticmethod
    def of(lo: Any, hi: Any, nz: bool = False) -> Iv:
        lo_a, hi_a = _arr(lo), _arr(hi)
        if lo_a.shape != hi_a.shape:
            try:
                lo_a, hi_a = np.broadcast_arrays(lo_a, hi_a)
            except ValueError:
                lo_a, hi_a = np.asarray(lo_a.min()), np.asarray(hi_a.max())
        nz = nz or bool(np.all(lo_a > 0)) or bool(np.all(hi_a < 0))
        return Iv(np.array(lo_a), np.array(hi_a), nz)

    @staticmethod
    def exact(v: Any) -> Iv:
        return Iv.of(v, v)

    # ------------------------------------------------------------------------------------------- queries
    def signs(self) -> frozenset[int]:
        s = set()
        if np.any(self.lo < 0):
            s.add(-1)
        if np.any(self.hi > 0):
            s.add(1)
        if not self.nz and np.any((self.lo <= 0) & (self.hi >= 0)):
            s.add(0)
        return frozenset(s)

    @property
    def nonneg(self) -> bool:
        return -1 not in self.signs()

    @property
    def nonpos(self) -> bool:
        return 1 not in self.signs()

    @property
    def zero(self) -> bool:
        return self.signs() <= {0}

    @property
    def free(self) -> bool:
        s = self.signs()
        return -1 in s and 1 in s

    @property
    def number(self) -> float | None:
        """The exact value when it is one number for every channel."""
        if self.lo.size and np.all(self.lo == self.hi) and np.all(self.lo == self.lo.reshape(-1)[0]):
            v = float(self.lo.reshape(-1)[0])
            return v if np.isfinite(v) else None
        return None

    def word(self) -> str:
        """`zero`, `nonnegative`, `nonpositive` or `mixed` (as the sign of a matrix or a value)."""
        s = self.signs()
        if s <= {0}:
            return "zero"
        if -1 not in s:
            return "nonnegative"
        if 1 not in s:
            return "nonpositive"
        return "mixed"

    # ---------------------------------------------------------------------------------------- arithmetic
    def __neg__(self) -> Iv:
        return Iv.of(-self.hi, -self.lo, self.nz)

    def __add__(self, o: Iv) -> Iv:
        a_lo, b_lo = _pair(self.lo, o.lo)
        a_hi, b_hi = _pair(self.hi, o.hi)
        with np.errstate(invalid="ignore"):
            lo, hi = a_lo + b_lo, a_hi + b_hi
        lo, hi = np.where(np.isnan(lo), -INF, lo), np.where(np.isnan(hi), INF, hi)
        nz = (self.nz and o.zero) or (o.nz and self.zero)
        both_pos = (self.nonneg and o.nonneg) and (self.nz or o.nz)
        both_neg = (self.nonpos and o.nonpos) and (self.nz or o.nz)
        return Iv.of(lo, hi, nz or both_pos or both_neg)

    def __sub__(self, o: Iv) -> Iv:
        return self + (-o)

    def __mul__(self, o: Iv) -> Iv:
        a_lo, b_lo = _pair(self.lo, o.lo)
        a_hi, b_hi = _pair(self.hi, o.hi)
        with np.errstate(invalid="ignore"):
            ps = [a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi]
        ps = [np.where(np.isnan(p), 0.0, p) for p in ps]  # 0 * inf = 0 for intervals
        return Iv.of(np.minimum.reduce(ps), np.maximum.reduce(ps), self.nz and o.nz)

    def reciprocal(self) -> Iv:
        """1 / self; a denominator that may be 0 gives [-inf, inf] (and `maybe_nonfinite` is the caller's)."""
        if not self.nz and 0 in self.signs():
            return TOP
        s = self.signs()
        if s <= {1}:
            with np.errstate(divide="ignore"):
                return Iv.of(1.0 / self.hi, np.where(self.lo > 0, 1.0 / np.where(self.lo > 0, self.lo, 1), INF), True)
        if s <= {-1}:
            with np.errstate(divide="ignore"):
                return Iv.of(np.where(self.hi < 0, 1.0 / np.where(self.hi < 0, self.hi, -1), -INF), 1.0 / self.lo, True)
        return NONZERO

    def hull(self, o: Iv) -> Iv:
        a_lo, b_lo = _pair(self.lo, o.lo)
        a_hi, b_hi = _pair(self.hi, o.hi)
        return Iv.of(np.minimum(a_lo, b_lo), np.maximum(a_hi, b_hi), self.nz and o.nz)

    def collapse(self) -> Iv:
        """One interval for every channel."""
        return Iv.of(self.lo.min(), self.hi.max(), self.nz)


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
        out = Iv.of(np.maximum(out.lo, lo), np.maximum(out.hi, lo), out.nz and lo >= 0 or lo > 0)
    if hi is not None:
        out = Iv.of(np.minimum(out.lo, hi), np.minimum(out.hi, hi), out.nz and hi <= 0 or hi < 0)
    return out


def maximum(a: Iv, b: Iv) -> Iv:
    a_lo, b_lo = _pair(a.lo, b.lo)
    a_hi, b_hi = _pair(a.hi, b.hi)
    lo, hi = np.maximum(a_lo, b_lo), np.maximum(a_hi, b_hi)
    return Iv.of(lo, hi, bool(np.all(lo > 0)) or (a.nz and b.nz and a.nonpos and b.nonpos))


def minimum(a: Iv, b: Iv) -> Iv:
    return -maximum(-a, -b)


def stab(z: Iv, eps: float | None) -> Iv:
    """`stab(z, eps)` = z + eps * sign(z) with sign(0) = +1: z's sign, never 0 when eps > 0."""
    if eps is None or eps <= 0:
        return z if eps == 0 else TOP
    if z.nonneg:
        return Iv.of(z.lo + eps, z.hi + eps, True)
    if -1 in z.signs() and z.signs() <= {-1}:
        return Iv.of(z.lo - eps, z.hi - eps, True)
    return Iv.of(np.minimum(z.lo - eps, eps), np.maximum(z.hi + eps, -eps), True)


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
        return type(root.get_submodule(node.target)).__name__.lower()
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
        return float(getattr(root.get_submodule(node.target), "value", 0.0) or 0.0)
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
    """Interval of an op's output from its inputs' intervals (sound: unknown gives TOP)."""
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
        pad = _pad_value(node, root)
        return TOP if pad is None else Iv.of(hull.lo, hull.hi).collapse().hull(Iv.exact(pad))
    if kind == "add":
        if add_subtracts(node):
            return TOP
        out = inputs[0]
        for v in inputs[1:]:
            out = out + v
        return out.collapse()
    if kind == "softmax":
        return NONPOS if "log" in _target_name(node, root) else Iv.of(0.0, 1.0)
    if kind == "activation":
        name = _target_name(node, root)
        if name in _ACT_NONNEG:
            return NONNEG
        if name in _ACT_SIGN_KEEPING:
            return from_signs(hull.signs())
        return TOP
    return TOP
