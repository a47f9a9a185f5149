"""The static verdict of a rule file without a model (`rulelang check FILE --theory`).

Each rule is analysed at synthetic nodes, one per op kind in the role it has in a typical ReLU network (the
standard assumptions of Sixt et al. 2020): conv/dense read non-negative inputs (after a ReLU or a pool) and
produce signed outputs; ReLUs read signed pre-activations; pools, reshapes, dropout and concatenations read
non-negative values; the first conv/dense reads the signed network input (bounded by the rule's `lo`/`hi`
when it has them). Two extra nodes show the fate on residual networks: an unfolded BatchNorm (signed input)
and a residual add whose summands are a signed branch and a non-negative skip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from ..compiler.match import selector_matches
from ..lang import ast as A
from ..lang.printer import format_selector
from . import signs as S
from .absint import Body, Const, Value
from .signs import Iv
from .sites import Site, stream_value, summarize, where
from .static import THEOREM, combine, input_interval

#: (label, kind, first, last, input signs, chain role): `chain` nodes decide the verdict (a sequential ReLU
#: network), `first` is the input layer, `residual` the extra nodes of residual networks.
SCENARIOS: tuple[tuple[str, str, bool, bool, tuple[str, ...], str], ...] = (
    ("dense (output layer)", "dense", False, True, ("+",), "chain"),
    ("dense", "dense", False, False, ("+",), "chain"),
    ("conv", "conv", False, False, ("+",), "chain"),
    ("relu", "relu", False, False, ("±",), "chain"),
    ("maxpool", "maxpool", False, False, ("+",), "chain"),
    ("avgpool", "avgpool", False, False, ("+",), "chain"),
    ("reshape", "reshape", False, False, ("+",), "chain"),
    ("dropout", "dropout", False, False, ("+",), "chain"),
    ("cat", "cat", False, False, ("+", "+"), "chain"),
    ("first conv (network input)", "conv", True, False, ("in",), "first"),
    ("first dense (network input)", "dense", True, False, ("in",), "first"),
    ("affine (unfolded BatchNorm)", "affine", False, False, ("±",), "residual"),
    ("residual add (signed branch + skip)", "add", False, False, ("±", "+"), "residual"),
)


def _kind(name: str) -> Any:
    try:
        from ..lang.kinds import Kind

        return Kind(name)
    except (ImportError, ValueError, TypeError):
        return name


def _rule_for(rf: A.RuleFile, kind: str, first: bool, last: bool) -> tuple[A.Rule, str] | None:
    op = SimpleNamespace(
        kind=_kind(kind), first=first, last=last, name=f"<{kind}>", out=SimpleNamespace(name=f"<{kind}>"), module=None
    )
    for k, rule in enumerate(rf.rules):
        if rule.match is not None and selector_matches(rule.match, op):  # type: ignore[arg-type]
            return rule, f"rules[{k}] {format_selector(rule.match)}"
    if rf.default is not None:
        return rf.default, "default"
    return None


@dataclass
class TheoryRow:
    label: str
    role: str
    rule: str
    rule_line: str
    linearity: str
    sign: str | None
    why: str | None
    alpha: float | None = None
    beta: float | None = None

    @property
    def nonnegative(self) -> bool:
        return self.linearity == "linear" and self.sign in ("nonnegative", "zero")

    def text(self) -> str:
        fate = self.sign if self.linearity == "linear" else self.linearity
        return f"{self.label}: {fate}" + (f" — {self.why}" if self.why and not self.nonnegative else "")


@dataclass
class TheoryResult:
    """Per-rule-file verdict under the standard assumptions."""

    verdict: str
    summary: str
    rows: list[TheoryRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "summary": self.summary, "nodes": [vars(r) for r in self.rows]}

    def __str__(self) -> str:
        lines = [f"{self.verdict} — {self.summary}"]
        groups: dict[str, list[str]] = {}
        for r in self.rows:
            if r.role == "chain" and r.nonnegative:
                continue
            fate = r.sign if r.linearity == "linear" else r.linearity
            groups.setdefault(f"{fate}" + (f" — {r.why}" if r.why and not r.nonnegative else ""), []).append(r.label)
        lines += [f"  {', '.join(labels)}: {fate}" for fate, labels in groups.items()]
        return "\n".join(lines)


class _Synthetic:
    def __init__(self, rf: A.RuleFile) -> None:
        self.rf = rf
        self.input_iv, _ = input_interval(rf, None)
        self.fitted = tuple(f.name for f in rf.fit)

    def _iv(self, s: str) -> Iv:
        return {"+": S.NONNEG, "±": S.TOP, "in": self.input_iv}[s]

    def site(self, kind: str, ins: tuple[str, ...], i: int) -> Site:
        xs = [Const(self._iv(s), "x" if self._iv(s).free else None) for s in ins]
        y_iv = S.kind_forward_sign(kind, [x.iv for x in xs])
        parametric = kind in S.WEIGHTED
        producer = "conv" if kind in ("relu", "affine", "activation") else "relu"
        return Site(
            name=f"<{kind}>",
            kind=kind,
            xs=xs,
            y=Const(y_iv, "y" if y_iv.free else None),
            fwd=lambda ivs: S.kind_forward_sign(kind, ivs),
            x0s=[Const(x.iv, "x0" if x.iv.free else None) for x in xs],
            y0=Const(y_iv, "y0" if y_iv.free else None),
            w=Const(S.TOP, "w", wkey="w") if parametric else None,
            b=Const(S.TOP, "b") if parametric else None,
            jac=S.NONNEG if kind in S.JACOBIAN_NONNEG else S.TOP,
            fwdq=lambda j, attr: self.forward_quantity(producer, attr),
            i=i,
        )

    def forward_quantity(self, kind: str, attr: str) -> Value | None:
        found = _rule_for(self.rf, kind, False, False)
        if found is None or attr not in dict(found[0].forward):
            return None
        s = self.site(kind, ("+",), 0)
        return Body(s, s.names(self.rf, {}, self.fitted), dict(self.rf.define)).eval(dict(found[0].forward)[attr])

    def row(self, label: str, kind: str, first: bool, last: bool, ins: tuple[str, ...], role: str) -> TheoryRow | None:
        found = _rule_for(self.rf, kind, first, last)
        if found is None:
            return None
        rule, rlabel = found
        streams = {s: stream_value(s) for s in self.rf.streams}
        facts = []
        for i in range(len(ins)):
            for _, block in rule.relevance:
                s = self.site(kind, ins, i)
                v = Body(s, s.names(self.rf, streams, self.fitted), dict(self.rf.define)).block(block)
                facts.append(summarize(v, block))
        lin, sign, why, alpha, beta = combine(facts, rule)
        return TheoryRow(label, role, rlabel, where(None, rule), lin, sign, why, alpha, beta)


def theory(rf: A.RuleFile) -> TheoryResult:
    """The verdict of a rule file under the standard assumptions (see the module docstring)."""
    syn = _Synthetic(rf)
    rows = [r for sc in SCENARIOS if (r := syn.row(*sc)) is not None]
    chain = [r for r in rows if r.role == "chain"]
    bad = [r for r in chain if r.linearity != "linear"]
    if bad:
        worst = [r for r in bad if r.linearity != "positively-homogeneous"]
        brk = (worst or bad)[0]
        verdict = "nonlinear" if worst else "positively-homogeneous"
        summary = f"at {brk.label}: {brk.why}"
    elif all(r.nonnegative for r in chain):
        verdict = "nonnegative-chain"
        summary = f"every hidden map of a ReLU network is linear and non-negative: {THEOREM}"
    else:
        brk = next(r for r in chain if not r.nonnegative)
        verdict = "mixed"
        summary = f"at {brk.label}: {brk.why}"
    return TheoryResult(verdict, summary, rows)
