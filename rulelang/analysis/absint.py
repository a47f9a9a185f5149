"""Abstract interpretation of one rule body at one node: dependence on the relevance and sign of its matrix.

A body's value is one of
- `Const`: no dependence on the relevance streams; an interval (`signs.Iv`), optionally kept as a sum of
  `layer(t, w)` pieces per weight part (`w+`, `w-`) so that z^B's `layer(x) - layer(l, w=w.pos) - ...` regroups
  into `layer(x - l, w.pos) + ...` and interval arithmetic can prove it non-negative;
- `Lin`: linear in the streams, as a sum of parts `scalar * coef ⊙ M` (an elementwise coefficient times a map
  whose entries have sign `msign`), keyed by the map's identity so parts of the same map merge (`x * vjp(s) -
  l * vjp(s, w=w.pos)` -> `(x - l) * vjp(s, w=w.pos) + ...`);
- `Dep`: a nonlinear dependence: `inv` (positively homogeneous of degree 0: `R > 0`), `poshom` (of degree 1:
  `R.pos`, `where(R > 0, R, 0)`, a percentile threshold) or `other`.

The per-builtin and per-operator transfer functions are the single table `TRANSFER` (name -> function).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..lang import ast as A
from ..lang.printer import format_expr
from . import signs as S
from .signs import Iv

Key = tuple


# --------------------------------------------------------------------------------------------------- values
@dataclass(eq=False)
class Const:
    """A value independent of the relevance."""

    iv: Iv
    culprit: str | None = None  # the smallest sub-expression whose free sign makes `iv` free
    terms: dict[Key, tuple[Iv, Iv, str | None]] | None = None  # {(op, weight part): (w sign, input, its text)}
    base: Iv | None = None  # with `terms`: the additive rest (a bias)
    wkey: str | None = None  # identity of a weight: "w" (the node's), "w+", "w-"
    boolean: bool = False
    src: str | None = None  # canonical text of a pure input expression (`x.pos`): identifies the value
    guard: Guard | None = None  # see `Guard`
    diff: str | None = None  # "y" for `y - y0`, "x" for `x - x0` (secant slopes of a ReLU: DeepLIFT)
    small_of: int | None = None  # for `abs(d) < c` with c > 0: id of d (d != 0 where the condition is false)


@dataclass
class Guard:
    """`stab(z, eps)` of a z whose summands (bias and every `layer()` piece) share one sign: where z = 0 every
    summand is 0. A map entry `c_i K_ij / stab(z_j)` whose `c_i K_ij` is a summand of z_j is therefore 0 where
    z_j = 0, and has sign `sign` elsewhere; `wkey` is the (op, weight part) the map went through (vjp)."""

    terms: dict[Key, tuple[Iv, Iv, str | None]]
    sign: Iv
    wkey: Key | None = None


@dataclass
class Note:
    """Why a part of a linear map is not non-negative: `culprit` has free sign (or is <= 0) in `context`."""

    culprit: str
    context: A.Expr | None
    free: bool = True


@dataclass
class Part:
    scalar: float
    coef: Iv
    msign: Iv
    note: Note | None = None
    guard: Guard | None = None  # the sign of coef ⊙ map once a matching summand factor multiplies it
    secant: Iv | None = None  # the coefficient before a `y - y0` factor (see `Const.diff`)

    def sign(self) -> Iv:
        if self.scalar == 0:
            return S.ZERO
        return Iv.exact(self.scalar) * self.coef * self.msign


@dataclass(eq=False)
class Lin:
    """Linear in the relevance streams: sum of parts keyed by the identity of their map."""

    parts: dict[Key, Part] = field(default_factory=dict)

    def sign(self) -> Iv:
        total = S.ZERO
        for p in self.parts.values():
            total = total + p.sign()
        return total

    def notes(self) -> list[Note]:
        """Notes of the parts that break non-negativity, free-sign parts first."""
        free = [p.note for p in self.parts.values() if p.note and p.sign().free]
        neg = [p.note for p in self.parts.values() if p.note and not p.sign().free and not p.sign().nonneg]
        return free + neg


@dataclass(eq=False)
class Dep:
    """A nonlinear dependence on the relevance: `inv` (degree 0), `poshom` (degree 1) or `other`."""

    kind: str
    why: str
    context: A.Expr | None = None


Value = Const | Lin | Dep


def klass(v: Value) -> str:
    """`zero`, `const`, `linear`, `inv`, `poshom` or `other`."""
    if isinstance(v, Const):
        return "zero" if v.iv.zero and v.terms is None else "const"
    if isinstance(v, Lin):
        return "linear" if v.parts else "zero"
    return v.kind


DEG1 = {"linear", "poshom", "zero"}
DEG0 = {"const", "inv", "zero"}


def const(iv: Iv, culprit: str | None = None, **kw: Any) -> Const:
    return Const(iv, culprit if iv.free else None, **kw)


def lconst(iv: Iv, e: A.Expr, *vals: Value) -> Const:
    """A Const whose culprit (computed only when `iv` is free) is the first free operand's, else `e`."""
    return Const(iv, find_culprit(e, *vals) if iv.free else None)


def find_culprit(e: A.Expr, *vals: Value) -> str:
    for v in vals:
        if isinstance(v, Const) and v.iv.free and v.culprit:
            return v.culprit
    return format_expr(e)


def _iv(v: Const) -> Iv:
    return v.iv


def layered(base: Iv, terms: dict[Key, tuple[Iv, Iv, str | None]]) -> Iv:
    out = base
    for wsign, inner, _ in terms.values():
        out = out + S.matmul(wsign, inner)
    return out


def one_signed_summands(c: Const) -> Iv | None:
    """NONPOS (or NONNEG) when `c` is a `layer()` sum whose bias and pieces all have that sign."""
    if c.terms is None or c.base is None:
        return None
    for side in (S.NONPOS, S.NONNEG):
        ok = (c.base.nonpos if side is S.NONPOS else c.base.nonneg) and all(
            (S.matmul(ws, inner).nonpos if side is S.NONPOS else S.matmul(ws, inner).nonneg)
            for ws, inner, _ in c.terms.values()
        )
        if ok:
            return side
    return None


def _flat(v: Const) -> Const:
    """The same value without its `layer()` pieces."""
    return v if v.terms is None else Const(v.iv, v.culprit, boolean=v.boolean)


# ------------------------------------------------------------------------------------------ linear algebra
def scale(v: Lin, c: Const, e: A.Expr) -> Lin:
    """c ⊙ v for a relevance-independent c."""
    n = c.iv.number
    out = Lin()
    for k, p in v.parts.items():
        g = p.guard
        if g is not None and g.wkey is not None and c.src is not None and g.terms.get(g.wkey, (0, 0, None))[2] == c.src:
            q = replace(p, coef=p.coef * c.iv, msign=g.sign, guard=None, note=None, secant=None)  # guard discharged
        elif n is not None:
            q = replace(p, scalar=p.scalar * n, guard=g if n > 0 else None)
        else:
            q = replace(
                p, coef=p.coef * c.iv, guard=None, secant=p.coef if c.diff == "y" and p.secant is None else None
            )
        if q.sign().zero:
            continue
        if not c.iv.nonneg and (q.note is None or (c.iv.free and not p.sign().free)) and not q.sign().nonneg:
            q.note = Note(find_culprit(e, c), e, c.iv.free)  # only when the part's sign breaks
        out.parts[k] = q
    return out


def lin_add(a: Lin, b: Lin, sub: bool = False) -> Lin:
    out = Lin(dict(a.parts))
    for k, p in b.parts.items():
        q = replace(p, scalar=-p.scalar) if sub else p
        if k in out.parts:
            o = out.parts[k]
            if o.scalar == q.scalar:
                merged = replace(o, coef=o.coef + q.coef, note=o.note or q.note, guard=None, secant=None)
            else:
                coef = Iv.exact(o.scalar) * o.coef + Iv.exact(q.scalar) * q.coef
                merged = replace(o, scalar=1.0, coef=coef, note=o.note or q.note, guard=None, secant=None)
            if merged.sign().zero:
                del out.parts[k]
            else:
                out.parts[k] = merged
        else:
            out.parts[k] = q
    return out


def lin_map(v: Lin, key: Key, msign: Iv, note: Note | None, wkey: Key | None = None) -> Lin:
    """A linear map with entries of sign `msign` (through weight part `wkey`) applied to `v` (one new part)."""
    s = v.sign()
    total = S.matmul(msign, s)
    if total.zero:
        return Lin()
    inner = v.notes()
    if s.free and inner:
        note = inner[0]
    elif note is None and inner and not total.nonneg:
        note = inner[0]
    guard = None
    parts = list(v.parts.values())
    if wkey is not None and len(parts) == 1 and parts[0].guard is not None and parts[0].guard.wkey is None:
        p = parts[0]
        g = p.guard
        guard = Guard(g.terms, S.matmul(msign, Iv.exact(p.scalar) * g.sign), wkey)  # type: ignore[union-attr]
    return Lin({key: Part(1.0, S.ONE, total, note, guard)})


def const_add(a: Const, b: Const, e: A.Expr, sub: bool = False) -> Const:
    """a + b (or a - b), regrouping `layer()` pieces of the same weight part."""
    if a.terms is not None or b.terms is not None:
        ta = a.terms if a.terms is not None else {}
        tb = b.terms if b.terms is not None else {}
        base_a = a.base if a.terms is not None else a.iv
        base_b = b.base if b.terms is not None else b.iv
        terms = dict(ta)
        for k, (ws, inner, src) in tb.items():
            inner = -inner if sub else inner
            src = None if sub else src
            terms[k] = (ws, terms[k][1] + inner, None) if k in terms else (ws, inner, src)
        base = base_a - base_b if sub else base_a + base_b  # type: ignore[operator]
        iv = layered(base, terms)
        return Const(iv, find_culprit(e, a, b) if iv.free else None, terms=terms, base=base)
    iv = a.iv - b.iv if sub else a.iv + b.iv
    return lconst(iv, e, a, b)


def const_scale(a: Const, n: float) -> Const:
    if a.terms is not None:
        k = Iv.exact(n)
        terms = {key: (ws, inner * k, src if n == 1 else None) for key, (ws, inner, src) in a.terms.items()}
        base = a.base * k if a.base is not None else S.ZERO
        return Const(layered(base, terms), a.culprit, terms=terms, base=base)
    return Const(a.iv * Iv.exact(n), a.culprit)


# --------------------------------------------------------------------------------------------- the table
Fn = Callable[["Body", A.Expr, list[Value]], Value]


def other(e: A.Expr, what: str) -> Dep:
    return Dep("other", what, e)


def _first_dep(vals: list[Value]) -> Dep | None:
    for v in vals:
        if isinstance(v, Dep):
            return v
    return None


def t_add(ev: Body, e: A.Expr, args: list[Value], sub: bool = False) -> Value:
    a, b = args
    ka, kb = klass(a), klass(b)
    if isinstance(a, Const) and isinstance(b, Const):
        return const_add(a, b, e, sub)
    if isinstance(a, Lin) and isinstance(b, Lin):
        return lin_add(a, b, sub)
    if isinstance(a, Lin) and kb == "zero":
        return a
    if ka == "zero" and isinstance(b, Lin):
        return lin_add(Lin(), b, sub)
    if ka in DEG1 and kb in DEG1:
        d = _first_dep([a, b])
        return Dep("poshom", d.why if d else format_expr(e), d.context if d else e)
    if ka in DEG0 and kb in DEG0:
        d = _first_dep([a, b])
        return Dep("inv", d.why if d else format_expr(e), d.context if d else e)
    return _nonlinear(e, [a, b], f"`{format_expr(e)}` adds a relevance-independent term to a relevance term")


def t_sub(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    return t_add(ev, e, args, sub=True)


def _nonlinear(e: A.Expr, vals: list[Value], why: str) -> Dep:
    for v in vals:
        if isinstance(v, Dep) and v.kind == "other":
            return v
    return Dep("other", why, e)


def t_mul(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    a, b = args
    ka, kb = klass(a), klass(b)
    if ka == "zero" and isinstance(a, Const) or kb == "zero" and isinstance(b, Const):
        return Const(S.ZERO)
    if isinstance(a, Const) and isinstance(b, Const):
        if a.iv.number is not None and b.terms is not None:
            return const_scale(b, a.iv.number)
        if b.iv.number is not None and a.terms is not None:
            return const_scale(a, b.iv.number)
        iv = a.iv * b.iv
        return Const(iv, find_culprit(e, a, b) if iv.free else None, boolean=a.boolean and b.boolean)
    if isinstance(a, Lin) and isinstance(b, Const):
        return scale(a, b, e)
    if isinstance(a, Const) and isinstance(b, Lin):
        return scale(b, a, e)
    if {ka, kb} <= DEG0:
        d = _first_dep([a, b])
        return Dep("inv", d.why if d else "", d.context if d else e)
    if (ka in DEG0 and kb in DEG1) or (ka in DEG1 and kb in DEG0):
        d = _first_dep([a, b])
        return Dep("poshom", d.why if d else format_expr(e), d.context if d else e)
    return _nonlinear(e, [a, b], f"`{format_expr(e)}` multiplies two relevance terms")


def t_div(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    a, b = args
    ka, kb = klass(a), klass(b)
    if isinstance(b, Const):
        inv = b.iv.reciprocal()
        if isinstance(a, Const):
            if a.iv.zero and a.terms is None and b.iv.nz:
                return Const(S.ZERO)
            return lconst(a.iv * inv, e, a, b)
        if isinstance(a, Lin) and b.diff == "x" and ev.site.kind == "relu" and (b.iv.nz or id(b) in ev.nonzero):
            # (y - y0) / (x - x0) of a ReLU is a secant slope in [0, 1] wherever x != x0
            if all(p.secant is not None for p in a.parts.values()):
                return Lin({k: replace(p, coef=p.secant * S.UNIT, secant=None) for k, p in a.parts.items()})  # type: ignore[operator]
        if isinstance(a, Lin):
            c = Const(inv, b.culprit if b.iv.free or not b.iv.nz else None)
            if not b.iv.nz and 0 in b.iv.signs():
                c = Const(S.TOP, f"{format_expr(e.right) if isinstance(e, A.Binary) else 'the denominator'} may be 0")
            out = scale(a, c, e)
            if b.guard is not None:
                g_inv = b.guard.sign.reciprocal()
                for k, p in out.parts.items():
                    old = a.parts[k]
                    out.parts[k] = replace(p, guard=Guard(b.guard.terms, old.coef * g_inv * old.msign))
            return out
        if ka in ("poshom", "inv"):
            return replace(a)
    if ka in DEG0 and kb in DEG0 and "inv" in (ka, kb):
        d = _first_dep([a, b])
        return Dep("inv", d.why if d else "", d.context if d else e)
    return _nonlinear(e, [a, b], f"`{format_expr(e)}` divides by a relevance term")


def t_pow(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    a, b = args
    if isinstance(a, Const) and isinstance(b, Const):
        return lconst(S.power(a.iv, b.iv.number), e, a)
    if isinstance(b, Const) and b.iv.number == 1:
        return a
    return _nonlinear(e, [a, b], f"`{format_expr(e)}` raises a relevance term to a power")


def t_compare(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    a, b = args
    ka, kb = klass(a), klass(b)
    if isinstance(a, Const) and isinstance(b, Const):
        out = Const(S.UNIT, boolean=True)
        n = b.iv.number
        if isinstance(e, A.Binary) and e.op == "<" and n is not None and n > 0:
            arg = e.left.args[0] if isinstance(e.left, A.Call) and e.left.func == "abs" and e.left.args else None
            if isinstance(arg, A.Name) and arg.id in ev._locals:
                out.small_of = id(ev.lookup(arg.id, arg))
        return out
    if ka in DEG1 and kb in DEG1:  # compares two degree-1 terms (or one with 0): invariant under R -> cR, c > 0
        return Dep("inv", f"`{format_expr(e)}` compares relevance terms", e)
    if ka in DEG0 and kb in DEG0:
        d = _first_dep([a, b])
        return Dep("inv", d.why if d else "", d.context if d else e)
    return _nonlinear(e, [a, b], f"`{format_expr(e)}` compares a relevance term with a nonzero threshold")


def t_logic(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    if all(isinstance(v, Const) for v in args):
        return Const(S.UNIT, boolean=True)
    if all(klass(v) in DEG0 for v in args):
        d = _first_dep(args)
        return Dep("inv", d.why if d else "", d.context if d else e)
    return _nonlinear(e, args, f"`{format_expr(e)}` combines relevance conditions")


def t_neg(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    (a,) = args
    if isinstance(a, Const):
        return const_scale(a, -1.0) if a.terms is not None else Const(-a.iv, a.culprit)
    if isinstance(a, Lin):
        return lin_add(Lin(), a, sub=True)
    return a


def t_plus(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    return args[0]


def t_invert(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    (a,) = args
    return Const(S.UNIT, boolean=True) if isinstance(a, Const) else a


def _rectify(part: str) -> Fn:
    def f(ev: Body, e: A.Expr, args: list[Value]) -> Value:
        (a,) = args
        if isinstance(a, Const):
            iv = a.iv
            if part == "pos":
                out = S.clamp(iv, 0.0, None)
            elif part == "neg":
                out = S.clamp(iv, None, 0.0)
            else:
                out = Iv.of(0.0, S.INF, iv.nz) if not iv.nonneg else iv
            wkey = {"w": f"w{'+' if part == 'pos' else '-' if part == 'neg' else '|'}"}.get(a.wkey or "")
            return Const(out, a.culprit if out.free else None, wkey=wkey)
        k = klass(a)
        if k in ("linear", "poshom"):
            return Dep("poshom", f"`{format_expr(e)}` rectifies the relevance", e)
        return a if k in ("inv", "zero") else _nonlinear(e, [a], "")

    return f


def t_sign(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    (a,) = args
    if isinstance(a, Const):
        s = a.iv.signs()
        return lconst(Iv.of(-1.0 if -1 in s else 0.0, 1.0 if 1 in s else 0.0, 0 not in s), e, a)
    if klass(a) in DEG1 | {"inv"}:
        return Dep("inv", f"`{format_expr(e)}` keeps only the relevance's signs", e)
    return a


def _elementwise(fn: Callable[[Iv], Iv], name: str) -> Fn:
    def f(ev: Body, e: A.Expr, args: list[Value]) -> Value:
        (a,) = args
        if isinstance(a, Const):
            return lconst(fn(a.iv), e, a)
        if klass(a) == "zero":
            return const(fn(S.ZERO))
        return _nonlinear(e, [a], f"`{format_expr(e)}` applies {name} to a relevance term")

    return f


def _like(iv: Iv) -> Fn:
    return lambda ev, e, args: Const(iv)


def t_reduce_sum(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    (a,) = args
    if isinstance(a, Const):
        c = S.convex(a.iv)
        return lconst(Iv(c.lo, c.hi, a.iv.nz and not a.iv.free), e, a)
    if isinstance(a, Lin):
        return lin_map(a, ("sum", ev.key(a)), S.NONNEG, None)
    return a


def t_reduce_max(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    (a,) = args
    if isinstance(a, Const):
        return lconst(a.iv.collapse(), e, a)
    if klass(a) in ("linear", "poshom"):
        return Dep("poshom", f"`{format_expr(e)}` takes the relevance's extreme value", e)
    return a


def t_percentile(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    a = args[0]
    if isinstance(a, Const):
        return lconst(S.convex(a.iv), e, a)
    if klass(a) in ("linear", "poshom"):
        return Dep("poshom", f"`{format_expr(e)}` is a percentile of the relevance", e)
    return a


def t_stab(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    z, eps = args
    if isinstance(z, Const) and isinstance(eps, Const):
        out = lconst(S.stab(z.iv, eps.iv.number), e, z)
        n = eps.iv.number
        if n is not None and n > 0 and out.iv.free and one_signed_summands(z) is S.NONPOS:
            out.guard = Guard(z.terms, Iv.of(-S.INF, 0.0, True))  # type: ignore[arg-type]  # < 0 where z != 0
        return out
    return _nonlinear(e, [z, eps], f"`{format_expr(e)}` stabilises a relevance term (not homogeneous)")


def t_where(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    c, a, b = args
    kc, ka, kb = klass(c), klass(a), klass(b)
    if kc == "other":
        return c
    if isinstance(a, Const) and isinstance(b, Const) and kc in ("const", "zero"):
        return lconst(a.iv.hull(b.iv), e, a, b)
    if kc in ("const", "zero") and {ka, kb} <= {"linear", "zero"}:
        out = Lin()
        sel = Const(S.UNIT)
        for v in (a, b):
            if isinstance(v, Lin):
                out = lin_add(out, scale(v, sel, e))
        return out
    if {ka, kb} <= DEG1:
        if kc == "inv":
            return Dep("poshom", f"`{format_expr(e)}` selects by a condition on the relevance", e)
        d = _first_dep([a, b])
        return Dep("poshom", d.why if d else format_expr(e), d.context if d else e)
    if {ka, kb} <= DEG0:
        d = _first_dep([c, a, b])
        return Dep("inv", d.why if d else "", d.context if d else e)
    return _nonlinear(e, [a, b], f"`{format_expr(e)}` mixes relevance terms of different degrees")


def t_clamp(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    t, lo, hi = args
    nums = []
    for v in (lo, hi):
        nums.append(None if v is None else v.iv.number if isinstance(v, Const) else float("nan"))
    if any(n is not None and n != n for n in nums):  # a bound depends on the relevance
        return _nonlinear(e, [t], f"`{format_expr(e)}` clamps at a relevance-dependent bound")
    if isinstance(t, Const):
        if (lo is not None and nums[0] is None) or (hi is not None and nums[1] is None):
            return lconst(S.TOP, e, t)
        return lconst(S.clamp(t.iv, nums[0], nums[1]), e, t)
    k = klass(t)
    if k in ("linear", "poshom") and all(n in (None, 0.0) for n in nums):
        return Dep("poshom", f"`{format_expr(e)}` rectifies the relevance", e)
    if k in ("inv", "zero"):
        return t
    return _nonlinear(e, [t], f"`{format_expr(e)}` clamps a relevance term at a nonzero bound")


def _extreme(fn: Callable[[Iv, Iv], Iv]) -> Fn:
    def f(ev: Body, e: A.Expr, args: list[Value]) -> Value:
        a, b = args
        if isinstance(a, Const) and isinstance(b, Const):
            return lconst(fn(a.iv, b.iv), e, a, b)
        if {klass(a), klass(b)} <= DEG1:
            return Dep("poshom", f"`{format_expr(e)}` rectifies the relevance", e)
        if {klass(a), klass(b)} <= DEG0:
            return Dep("inv", "", e)
        return _nonlinear(e, [a, b], f"`{format_expr(e)}` compares the relevance with a nonzero bound")

    return f


def t_layer(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    return ev.site.layer(ev, e, args[0], ev.kwarg(e, "w"), ev.kwarg(e, "b"))


def t_vjp(ev: Body, e: A.Expr, args: list[Value]) -> Value:
    return ev.site.vjp(ev, e, args[0], ev.kwarg(e, "w"))


#: The transfer functions: one per builtin (rulelang/lang/builtins.py) and per operator of the language.
TRANSFER: dict[str, Fn] = {
    "+": t_add,
    "-": t_sub,
    "*": t_mul,
    "/": t_div,
    "**": t_pow,
    **{op: t_compare for op in ("==", "!=", "<", "<=", ">", ">=")},
    "&": t_logic,
    "|": t_logic,
    "u-": t_neg,
    "u+": t_plus,
    "u~": t_invert,
    "pos": _rectify("pos"),
    "neg": _rectify("neg"),
    "abs": _rectify("abs"),
    "sign": t_sign,
    "exp": _elementwise(lambda iv: S.NONNEG, "exp"),
    "log": _elementwise(lambda iv: S.TOP, "log"),
    "sqrt": _elementwise(lambda iv: S.NONNEG if iv.nonneg else S.TOP, "sqrt"),
    "ones_like": _like(S.ONE),
    "zeros_like": _like(S.ZERO),
    "sum": t_reduce_sum,
    "mean": t_reduce_sum,
    "max": t_reduce_max,
    "min": t_reduce_max,
    "stab": t_stab,
    "where": t_where,
    "clamp": t_clamp,
    "percentile": t_percentile,
    "maximum": _extreme(S.maximum),
    "minimum": _extreme(S.minimum),
    "layer": t_layer,
    "vjp": t_vjp,
}


# ----------------------------------------------------------------------------------------------- the body
class Body:
    """Evaluates rule-body expressions abstractly at one site (a node and one of its inputs)."""

    def __init__(self, site: Any, names: dict[str, Callable[[], Value]], defines: dict[str, A.Expr]) -> None:
        self.site = site
        self._thunks = names
        self._defines = defines
        self._values: dict[str, Value] = {}
        self._locals: set[str] = set()
        self.assume: dict[int, bool] = {}  # condition values (by id) assumed true/false in the current branch
        self.nonzero: set[int] = set()  # values (by id) known nonzero in the current branch
        self._alive: list[Value] = []  # values whose id() keys a map part: kept alive so ids are not reused

    def key(self, v: Value) -> int:
        """A key for `v`'s identity within this body (map parts of the same value merge)."""
        self._alive.append(v)
        return id(v)

    def lookup(self, name: str, e: A.Expr) -> Value:
        if name in self._values:
            return self._values[name]
        if name in self._thunks:
            v = self._thunks[name]()
        elif name in self._defines:
            v = self.eval(self._defines[name])
            if self.assume:
                return v  # evaluated under a branch's assumptions: not reusable elsewhere
        else:
            return Dep("other", f"`{name}` is not known to the analysis", e)
        self._values[name] = v
        return v

    def block(self, block: A.Block) -> Value:
        for a in block.assigns:
            self._values[a.name] = self.eval(a.value)
            self._locals.add(a.name)
        return self.eval(block.result)

    def _under(self, c: Value, flag: bool, e: A.Expr) -> Value:
        """`e` evaluated assuming the condition `c` is `flag`."""
        self.assume[id(c)] = flag
        self._alive.append(c)
        small = c.small_of if isinstance(c, Const) and not flag else None
        if small is not None:
            self.nonzero.add(small)
        try:
            return self.eval(e)
        finally:
            del self.assume[id(c)]
            if small is not None:
                self.nonzero.discard(small)

    def kwarg(self, e: A.Expr, name: str) -> Value | None:
        for k, v in getattr(e, "kwargs", ()):
            if k == name:
                return self.eval(v)
        return None

    def _pure(self, e: A.Expr) -> bool:
        """An input expression whose value is fixed at the site: `x`, `x[0]`, `x.pos`, `x0.neg` (no locals)."""
        if isinstance(e, A.Name):
            return e.id in ("x", "x0") and e.id not in self._locals
        if isinstance(e, A.Attr):
            return e.attr in ("pos", "neg", "abs") and self._pure(e.value)
        if isinstance(e, A.Index):
            return isinstance(e.index, A.Num) and self._pure(e.value)
        return False

    def eval(self, e: A.Expr) -> Value:
        v = self._eval(e)
        if isinstance(v, Const) and self._pure(e):
            v = replace(v, src=format_expr(e))
        return v

    def _eval(self, e: A.Expr) -> Value:
        if isinstance(e, A.Num):
            return Const(Iv.exact(e.value))
        if isinstance(e, A.Name):
            return self.lookup(e.id, e)
        if isinstance(e, A.Unary):
            return TRANSFER["u" + e.op](self, e, [self.eval(e.operand)])
        if isinstance(e, A.Binary):
            v = TRANSFER[e.op](self, e, [self.eval(e.left), self.eval(e.right)])
            if e.op == "-" and isinstance(v, Const) and isinstance(e.left, A.Name) and isinstance(e.right, A.Name):
                pair = (e.left.id, e.right.id)
                if pair in (("x", "x0"), ("y", "y0")) and not ({"x", "x0", "y", "y0"} & self._locals):
                    v = replace(v, diff=pair[0])
            return v
        if isinstance(e, A.Attr):
            if e.attr in ("pos", "neg", "abs"):
                return TRANSFER[e.attr](self, e, [self.eval(e.value)])
            return self.site.forward_quantity(self, e.value, e.attr)
        if isinstance(e, A.Index):
            if isinstance(e.value, A.Name) and e.value.id in ("x", "x0"):
                j = self.eval(e.index)
                n = j.iv.number if isinstance(j, Const) else None
                return self.site.input(e.value.id, None if n is None else int(n), e)
            return Dep("other", f"`{format_expr(e)}` indexes a value", e)
        if isinstance(e, A.Call):
            key = _transfer_key(e.func)
            if key not in TRANSFER:
                return Dep("other", f"`{e.func}()` is not known to the analysis", e)
            if key == "where" and len(e.args) == 3:
                c = self.eval(e.args[0])
                if id(c) in self.assume:  # the same condition decided by an enclosing where
                    return self.eval(e.args[1] if self.assume[id(c)] else e.args[2])
                branches = [self._under(c, flag, arg) for flag, arg in ((True, e.args[1]), (False, e.args[2]))]
                return TRANSFER["where"](self, e, [c, *branches])
            if e.func == "clamp":
                pos = [self.eval(a) for a in e.args]
                kw = {k: self.eval(v) for k, v in e.kwargs}
                lo = pos[1] if len(pos) > 1 else kw.get("min")
                hi = pos[2] if len(pos) > 2 else kw.get("max")
                return TRANSFER["clamp"](self, e, [pos[0], lo, hi])  # type: ignore[list-item]
            return TRANSFER[key](self, e, [self.eval(a) for a in e.args])
        return Dep("other", f"cannot analyse {type(e).__name__}", e)


def _transfer_key(func: str) -> str:
    """The TRANSFER key of a function: its builtin record's `transfer` (rulelang/lang/builtins.py), else its name."""
    try:
        from ..lang.builtins import FUNCTIONS

        rec = FUNCTIONS.get(func)
        return getattr(rec, "transfer", None) or func
    except ImportError:  # pragma: no cover - records not available
        return func
