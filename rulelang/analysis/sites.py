"""One node as the abstract interpreter sees it (`Site`), and the summary of its rule bodies (`BodyFact`).

A `Site` holds the abstract values of the names a body may read at a node (x, y, x0, y0, w, b, params,
streams, fitted statistics) and the node-bound functions `layer()` and `vjp()` for the node's op kind. Static
analysis of a compiled explainer builds sites from the model graph (`static.py`); `rulelang check --theory`
builds synthetic ones per op kind (`synthetic.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..lang import ast as A
from ..lang.printer import format_expr
from . import signs as S
from .absint import Body, Const, Dep, Lin, Note, Part, Value, find_culprit, klass, layered, lin_add, lin_map
from .signs import Iv

#: Linearity words, weakest claim last.
LINEARITY = ("linear", "positively-homogeneous", "none", "other")


def _same(v: Value) -> Value:
    return v


def stream_value(name: str) -> Lin:
    """A relevance stream: the identity map (non-negative)."""
    return Lin({("stream", name): Part(1.0, S.ONE, S.NONNEG)})


def param_value(v: Any) -> Const:
    if isinstance(v, (list, tuple)):
        return Const(Iv.of([float(t) for t in v], [float(t) for t in v]))
    return Const(Iv.exact(float(v)))


@dataclass
class Site:
    """A node (kind, name) and input `i`: abstract values of what its bodies read."""

    name: str
    kind: str
    xs: list[Const]
    y: Const
    fwd: Callable[[list[Iv]], Iv]  # forward sign of the op, given its inputs' intervals
    x0s: list[Const] | None = None
    y0: Const | None = None
    w: Const | None = None
    b: Const | None = None
    jac: Iv = S.TOP  # sign of the Jacobian of a non-parametric op
    fwdq: Callable[[int, str], Value | None] = lambda j, a: None
    i: int = 0

    @property
    def parametric(self) -> bool:
        return self.w is not None

    # ------------------------------------------------------------------------------------------- names
    def names(self, rf: A.RuleFile, streams: Mapping[str, Value], fitted: tuple[str, ...]) -> dict[str, Callable]:
        i = self.i
        missing = Const(S.TOP, "x0")
        out: dict[str, Callable[[], Value]] = {
            "x": lambda: self.xs[i],
            "y": lambda: self.y,
            "i": lambda: Const(Iv.exact(float(i))),
            "x0": lambda: self.x0s[i] if self.x0s else missing,
            "y0": lambda: self.y0 or Const(S.TOP, "y0"),
        }
        if self.w is not None:
            out["w"] = lambda: self.w  # type: ignore[return-value,assignment]
            out["b"] = lambda: self.b or Const(S.TOP, "b")
        for k, p in rf.params:
            out[k] = partial(param_value, p)
        for s, v in streams.items():
            out[s] = partial(_same, v)
        for f in fitted:
            out[f] = partial(Const, S.TOP, f, wkey=f"fit:{f}")
        return out

    def input(self, which: str, j: int | None, e: A.Expr) -> Value:
        vals = self.xs if which == "x" else (self.x0s or [Const(S.TOP, "x0")] * len(self.xs))
        if j is not None and 0 <= j < len(vals):
            v = vals[j]
            return Const(v.iv, format_expr(e) if v.iv.free else None)
        out = vals[0].iv
        for v in vals[1:]:
            out = out.hull(v.iv)
        return Const(out, format_expr(e) if out.free else None)

    def forward_quantity(self, ev: Body, base: A.Expr, attr: str) -> Value:
        j = self.i
        if isinstance(base, A.Index) and isinstance(base.index, A.Num):
            j = int(base.index.value)
        elif not (isinstance(base, A.Name) and base.id == "x"):
            return Dep("other", f"`{format_expr(base)}.{attr}` is not a forward quantity", base)
        v = self.fwdq(j, attr)
        if v is None:
            return Const(S.TOP, f"{format_expr(base)}.{attr}")
        if isinstance(v, Const):
            return Const(v.iv, f"{format_expr(base)}.{attr}" if v.iv.free else None)
        return v

    # ---------------------------------------------------------------------------------- layer() and vjp()
    def _wparts(self, w: Const, ev: Body) -> list[tuple[Any, Iv]]:
        if w.wkey == "w":
            return [("w+", S.NONNEG), ("w-", S.NONPOS)]  # the node's own weight: w = w.pos + w.neg
        if w.wkey in ("w+", "w-"):
            return [(w.wkey, w.iv)]
        return [(("val", ev.key(w)), w.iv)]

    @staticmethod
    def _note(w: Const, ws: Iv, e: A.Call) -> Note | None:
        """Why a map through weight part `ws` of `w` is not non-negative (None when it is)."""
        if ws.nonneg:
            return None
        kw = dict(e.kwargs).get("w")
        text = w.culprit or (format_expr(kw) if kw is not None else "w")
        return Note(text, e, free=w.wkey == "w" or ws.free)

    def layer(self, ev: Body, e: A.Call, t: Value, w: Value | None, b: Value | None) -> Value:
        if self.parametric:
            wv = w if w is not None else self.w
            bv = b if b is not None else self.b
            if not isinstance(wv, Const) or not isinstance(bv, Const):
                return Dep("other", f"`{format_expr(e)}` has relevance-dependent weights", e)
            if isinstance(t, Const):
                terms = {(self.name, k): (ws, t.iv, t.src) for k, ws in self._wparts(wv, ev)}
                iv = layered(bv.iv, terms)
                culprit = ((wv.culprit or "w") if wv.iv.free else find_culprit(e, t, bv)) if iv.free else None
                return Const(iv, culprit, terms=terms, base=bv.iv)
            if not bv.iv.zero:
                return Dep("other", f"`{format_expr(e)}` adds the bias to a relevance term (affine)", e)
            if isinstance(t, Lin):
                out = Lin()
                for k, ws in self._wparts(wv, ev):
                    note = self._note(wv, ws, e)
                    out = lin_add(out, lin_map(t, ("layer", self.name, k, ev.key(t)), ws, note))
                return out
            return t if klass(t) in ("poshom", "inv") else Dep("other", f"`{format_expr(e)}`", e)
        if isinstance(t, Const):
            ivs = [t.iv if j == self.i else x.iv for j, x in enumerate(self.xs)]
            iv = self.fwd(ivs)
            return Const(iv, find_culprit(e, t) if iv.free else None)
        k = klass(t)
        if self.kind in ("relu", "maxpool"):
            if k in ("linear", "poshom"):
                return Dep("poshom", f"`{format_expr(e)}` applies the {self.kind} to a relevance term", e)
            return t if k in ("inv", "zero") else t
        if self.kind in ("avgpool", "reshape", "dropout", "identity") or (
            self.kind in ("add", "cat") and len(self.xs) == 1
        ):
            if isinstance(t, Lin):
                return lin_map(t, ("layer", self.name, "J", ev.key(t)), S.NONNEG, None)
            return t
        if k == "zero":
            return self.layer(ev, e, Const(S.ZERO), w, b)
        return Dep("other", f"`{format_expr(e)}` applies a {self.kind} node to a relevance term", e)

    def vjp(self, ev: Body, e: A.Call, s: Value, w: Value | None) -> Value:
        wv = (w if w is not None else self.w) if self.parametric else None
        if wv is not None and not isinstance(wv, Const):
            return Dep("other", f"`{format_expr(e)}` has relevance-dependent weights", e)
        jac = wv.iv if isinstance(wv, Const) else self.jac
        if isinstance(s, Const):
            if s.iv.zero and s.terms is None:
                return Const(S.ZERO)
            iv = S.matmul(jac, s.iv)
            if not iv.free:
                return Const(iv)
            culprit = ((wv.culprit if wv else None) or "w") if jac.free and wv is not None else find_culprit(e, s)
            return Const(iv, culprit)
        if isinstance(s, Lin):
            if isinstance(wv, Const):
                out = Lin()
                for k, ws in self._wparts(wv, ev):
                    note = self._note(wv, ws, e)
                    out = lin_add(out, lin_map(s, ("vjp", self.name, k, ev.key(s)), ws, note, (self.name, k)))
                return out
            note = Note(f"the Jacobian of {self.kind}", e) if jac.free else None
            return lin_map(s, ("vjp", self.name, "J", ev.key(s)), jac, note)
        return s


# ----------------------------------------------------------------------------------------------- summary
@dataclass
class BodyFact:
    """What one body (one input, one stream) does with the relevance."""

    linearity: str
    sign: Iv | None = None  # the matrix's sign (linear bodies)
    note: Note | None = None
    why_text: str | None = None
    context: A.Expr | None = None
    alpha: float | None = None
    beta: float | None = None
    difference: bool = False
    notes: list[Note] = field(default_factory=list)


def summarize(v: Value, body: A.Block) -> BodyFact:
    k = klass(v)
    if k == "zero":
        return BodyFact("linear", S.ZERO)
    if k == "const":
        return BodyFact("none", None, why_text="the body does not depend on the relevance", context=body.result)
    if isinstance(v, Lin):
        sign = v.sign()
        notes = v.notes()
        fact = BodyFact("linear", sign, notes[0] if notes else None, notes=notes)
        diff = difference(v)
        if diff is not None and not sign.nonneg:
            fact.difference, (fact.alpha, fact.beta) = True, diff
            fact.context = body.result
        return fact
    assert isinstance(v, Dep)
    lin = "positively-homogeneous" if v.kind == "poshom" else "other"
    why = v.why or (f"`{format_expr(v.context)}` is not homogeneous in the relevance" if v.context else None)
    return BodyFact(lin, None, why_text=why, context=v.context)


def difference(v: Lin) -> tuple[float | None, float | None] | None:
    """(α, β) when `v` = α·P − β·N with P, N non-negative maps (the α-β family); None otherwise."""
    pos: list[float] = []
    neg: list[float] = []
    for p in v.parts.values():
        if p.scalar == 0 or not (p.coef * p.msign).nonneg:
            return None
        (pos if p.scalar > 0 else neg).append(abs(p.scalar))
    if not pos or not neg:
        return None
    a = pos[0] if all(x == pos[0] for x in pos) else None
    b = neg[0] if all(x == neg[0] for x in neg) else None
    return a, b


def where(e: A.Expr | None, rule: A.Rule) -> str:
    """`file.yaml:LINE` of an expression (or of the rule when the expression has no position)."""
    pos = getattr(e, "pos", None) or rule.pos
    if pos is None:
        return "-"
    return f"{Path(pos.path).name if pos.path else '<rule>'}:{pos.line}"


def explain(fact: BodyFact, rule: A.Rule) -> str | None:
    """The sentence saying why a body is not a non-negative linear map (None when it is)."""
    if fact.linearity == "linear":
        assert fact.sign is not None
        if fact.sign.nonneg:
            return None
        if fact.difference:
            a = "?" if fact.alpha is None else S_num(fact.alpha)
            b = "?" if fact.beta is None else S_num(fact.beta)
            ctx = fact.context
            part = f"`{format_expr(ctx.right)}` is subtracted" if isinstance(ctx, A.Binary) and ctx.op == "-" else ""
            return (
                f"difference of two non-negative maps (α = {a}, β = {b}): {part or 'see the body'}, {where(ctx, rule)}"
            )
        if fact.note is not None:
            ctx = fact.note.context
            what = "has free sign" if fact.note.free else "is non-positive"
            in_ = f" in `{format_expr(ctx)}`" if ctx is not None else ""
            return f"`{fact.note.culprit}` {what}{in_}, {where(ctx, rule)}"
        return f"the map's entries are {fact.sign.word()}, {where(None, rule)}"
    return f"{fact.why_text or 'nonlinear in the relevance'}, {where(fact.context, rule)}"


def S_num(v: float) -> str:  # noqa: N802
    return str(int(v)) if float(v).is_integer() else repr(float(v))
