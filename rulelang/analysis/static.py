"""Static analysis: prove or refute the positive matrix chain of a compiled explainer (no data needed).

`static(explainer)` interprets every matched rule body abstractly at its node (rulelang/analysis/absint.py)
over two domains — dependence on the relevance (none, linear, positively homogeneous, other) and the sign of a
linear body's matrix — with sign facts of forward values flowing through the model graph
(rulelang/analysis/signs.py). The chain verdict covers every relevance map above the first layer (the first
layer may read a signed network input):

- `nonnegative-chain`: every map is linear with non-negative entries: Theorem 1 of Sixt et al. (2020) applies;
- `mixed`: every map is linear, at least one has entries of both signs (or is a difference α·P − β·N);
- `positively-homogeneous`: some map is nonlinear, but every map is positively homogeneous (`R.pos`, ...);
- `nonlinear`: some map is neither linear nor positively homogeneous.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch.fx as fx

from ..errors import RulelangError
from ..lang import ast as A
from ..lang.printer import format_selector
from . import signs as S
from .absint import Body, Const, Value
from .signs import Iv
from .sites import LINEARITY, BodyFact, Site, explain, param_value, stream_value, summarize, where

VERDICTS = ("nonnegative-chain", "mixed", "positively-homogeneous", "nonlinear")
THEOREM = (
    "Theorem 1 (Sixt et al. 2020) applies — the explanation converges to rank 1 and cannot depend on the "
    "explained class or on parameters above the point of convergence"
)


@dataclass
class NodeResult:
    """The static facts of one node's relevance map (all its inputs and streams)."""

    name: str
    kind: str
    linearity: str  # linear | positively-homogeneous | none | other
    sign: str | None  # nonnegative | nonpositive | zero | mixed (linear maps only)
    why: str | None  # what breaks non-negativity or linearity, with file:line
    rule: str  # the matched rule (`rules[0] linear`, `default`)
    rule_line: str  # file:line of the matched rule
    alpha: float | None = None
    beta: float | None = None
    first_layer: bool = False  # every input of the node is the network input
    hidden: tuple[str, str | None, str | None] = ("linear", "zero", None)  # (linearity, sign, why) of hidden inputs

    @property
    def nonnegative(self) -> bool:
        return self.linearity == "linear" and self.sign in ("nonnegative", "zero")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "linearity": self.linearity,
            "sign": self.sign,
            "why": self.why,
            "rule": self.rule,
            "rule_line": self.rule_line,
            "first_layer": self.first_layer,
        }
        if self.alpha is not None or self.beta is not None:
            d["alpha"], d["beta"] = self.alpha, self.beta
        return d


@dataclass
class StaticResult:
    """The chain verdict with per-node facts; `str()` is the readable verdict."""

    verdict: str
    summary: str
    nodes: dict[str, NodeResult]
    first_break: str | None
    chain: list[str]  # the hidden chain's nodes, output first
    tail: dict[str, Any] | None = None  # the non-negative part below the lowest break, when there is one
    rule_file: str = ""
    assumptions: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "summary": self.summary,
            "first_break": self.first_break,
            "nonnegative_tail": self.tail,
            "rule_file": self.rule_file,
            "assumptions": self.assumptions,
            "nodes": {n: r.to_dict() for n, r in self.nodes.items()},
        }

    def __str__(self) -> str:
        lines = [f"static analysis of {self.rule_file}: {self.verdict}", f"  {self.summary}"]
        odd = [r for n in self.chain if not (r := self.nodes[n]).nonnegative]
        if odd:
            lines.append(f"  {len(odd)} of {len(self.chain)} hidden maps are not non-negative linear:")
            for r in odd[:8]:
                label = r.sign if r.linearity == "linear" else r.linearity
                lines.append(f"    {r.name} ({r.kind}): {label} — {r.hidden[2] or r.why}")
            if len(odd) > 8:
                lines.append(f"    ... and {len(odd) - 8} more")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


# ------------------------------------------------------------------------------------------- the analysis
def _bounds_iv(bounds: Any) -> Iv:
    lo, hi = bounds
    lo = lo.tolist() if hasattr(lo, "tolist") else lo
    hi = hi.tolist() if hasattr(hi, "tolist") else hi
    iv = Iv.of(lo, hi)
    if any(a > b for a, b in zip(iv.lo, iv.hi)):
        raise RulelangError(f"input_bounds: lo must not exceed hi (got {bounds!r})")
    return iv


def input_interval(rf: A.RuleFile, input_bounds: Any) -> tuple[Iv, str]:
    """The network input's interval and where it comes from."""
    if input_bounds is not None:
        return _bounds_iv(input_bounds), "input_bounds"
    p = rf.param_dict
    if "lo" in p and "hi" in p:
        return _bounds_iv((p["lo"], p["hi"])), "the rule's lo/hi parameters"
    return S.TOP, "unbounded (signed)"


def _has_bias(gm: fx.GraphModule, op: Any) -> bool:
    """False only when the node provably has no bias (a module without one, nothing folded into it)."""
    try:
        if op.fold is None and op.node.op == "call_module":
            return getattr(gm.get_submodule(op.node.target), "bias", True) is not None
    except AttributeError:
        pass
    return True


def _forward(kind: str, node: fx.Node, gm: fx.GraphModule, ivs: list[Iv]) -> Iv:
    return S.forward_sign(kind, node, gm, ivs)


class _Analysis:
    def __init__(self, explainer: Any, input_bounds: Any) -> None:
        self.ex = explainer
        self.og = explainer.graph
        self.rf: A.RuleFile = explainer.rules
        self.plan = explainer.plan
        bounds = input_bounds if input_bounds is not None else getattr(explainer, "input_bounds", None)
        self.input_iv, self.input_source = input_interval(self.rf, bounds)
        self.fitted = tuple(f.name for f in self.rf.fit)
        self.rows = {r.op.name: r for r in self.plan.rows}
        self.main = self._facts(self.input_iv)
        self.ref = self._facts(S.TOP) if self.rf.reference else None  # a caller may pass any reference
        self._fwdq: dict[tuple[str, str], Value | None] = {}

    def _facts(self, x: Iv) -> dict[fx.Node, Iv]:
        facts: dict[fx.Node, Iv] = {self.og.input: x}
        gm = self.og.gm
        for op in self.og.ops:
            ins = [facts.get(n, S.TOP) for n in op.inputs]
            facts[op.out] = S.forward_sign(str(op.kind), op.node, gm, ins)
        return facts

    def site(self, op: Any, i: int) -> Site:
        kind = str(op.kind)
        main, ref = self.main, self.ref

        def val(facts: dict[fx.Node, Iv], n: fx.Node, label: str) -> Const:
            iv = facts.get(n, S.TOP)
            return Const(iv, label if iv.free else None)

        parametric = kind in S.WEIGHTED and getattr(op, "pick", None) is None
        jac = S.NONNEG if kind in S.JACOBIAN_NONNEG and not (kind == "add" and S.add_subtracts(op.node)) else S.TOP
        gm = self.og.gm
        return Site(
            name=op.name,
            kind=kind,
            xs=[val(main, n, "x") for n in op.inputs],
            y=val(main, op.out, "y"),
            fwd=partial(_forward, kind, op.node, gm),
            x0s=[val(ref, n, "x0") for n in op.inputs] if ref else None,
            y0=val(ref, op.out, "y0") if ref else None,
            w=Const(S.TOP, "w", wkey="w") if parametric else None,
            b=(Const(S.TOP, "b") if _has_bias(gm, op) else Const(S.ZERO)) if parametric else None,
            jac=jac,
            fwdq=partial(self.forward_quantity, op),
            i=i,
        )

    def forward_quantity(self, op: Any, j: int, attr: str) -> Value | None:
        if not 0 <= j < len(op.inputs) or op.inputs[j] not in self.og.by_out:
            return None
        src = self.og.by_out[op.inputs[j]]
        key = (src.name, attr)
        if key not in self._fwdq:
            self._fwdq[key] = None
            expr = dict(self.plan.rule_for(src).forward).get(attr)
            if expr is not None:
                s = self.site(src, 0)
                self._fwdq[key] = Body(s, s.names(self.rf, {}, self.fitted), dict(self.rf.define)).eval(expr)
        return self._fwdq[key]

    def node(self, op: Any) -> NodeResult:
        row = self.rows[op.name]
        rule = row.rule
        streams = {s: stream_value(s) for s in self.rf.streams}
        facts: list[tuple[bool, BodyFact]] = []
        for i, n in enumerate(op.inputs):
            for _, block in rule.relevance:
                s = self.site(op, i)
                v = Body(s, s.names(self.rf, streams, self.fitted), dict(self.rf.define)).block(block)
                facts.append((n is self.og.input, summarize(v, block)))
        label = "default" if row.rule_index is None else f"rules[{row.rule_index}]"
        if rule.match is not None:
            label += f" {format_selector(rule.match)}"
        all_ = combine([f for _, f in facts], rule)
        hidden = combine([f for first, f in facts if not first], rule)
        first = bool(op.inputs) and all(n is self.og.input for n in op.inputs)
        return NodeResult(
            op.name,
            str(op.kind),
            all_[0],
            all_[1],
            all_[2],
            label,
            where(None, rule),
            all_[3],
            all_[4],
            first,
            hidden[:3],
        )


def combine(facts: list[BodyFact], rule: A.Rule) -> tuple[str, str | None, str | None, float | None, float | None]:
    """(linearity, sign, why, alpha, beta) of a node from its bodies' facts."""
    if not facts:
        return "linear", "zero", None, None, None
    lin = max((f.linearity for f in facts), key=LINEARITY.index)
    why = next((w for f in facts if (w := explain(f, rule))), None)
    if lin != "linear":
        bad = next(f for f in facts if f.linearity == lin)
        return lin, None, explain(bad, rule), None, None
    signs: set[int] = set()
    for f in facts:
        signs |= f.sign.signs()  # type: ignore[union-attr]
    word = S.from_signs(frozenset(signs)).word() if signs else "zero"
    diffs = [f for f in facts if f.difference]
    alpha = beta = None
    if diffs and all(f.difference or f.sign.nonneg for f in facts):  # type: ignore[union-attr]
        if len({(f.alpha, f.beta) for f in diffs}) == 1:
            alpha, beta = diffs[0].alpha, diffs[0].beta
    return lin, word, why, alpha, beta


def static(explainer: Any, *, input_bounds: Any = None) -> StaticResult:
    """Static chain verdict of a compiled explainer (see the module docstring).

    Parameters
    ----------
    explainer : rulelang.Explainer
        A compiled explainer (`rulelang.compile`); fitted statistics are not needed.
    input_bounds : (lo, hi), optional
        Range of the network input (scalars or one value per channel); defaults to `explainer.input_bounds`,
        then to the rule's `lo`/`hi` parameters (z^B), else the input is taken as signed.

    Returns
    -------
    StaticResult
        `.verdict`, `.summary`, `.nodes` (name -> NodeResult), `.first_break`, `.to_dict()`.
    """
    an = _Analysis(explainer, input_bounds)
    og = an.og
    nodes = {op.name: an.node(op) for op in og.ops}
    live = {og.output}
    for op in reversed(og.ops):
        if op.out in live:
            live.update(op.inputs)
    chain_ops = [op for op in og.ops if op.out in live and any(n is not og.input for n in op.inputs)]
    chain = [op.name for op in reversed(chain_ops)]
    name = Path(an.rf.path).name if an.rf.path else an.rf.name
    assumptions = {"input": an.input_source, "input_interval": _iv_text(an.input_iv)}
    verdict, summary, first_break, tail = verdict_of(chain_ops, nodes)
    return StaticResult(verdict, summary, nodes, first_break, chain, tail, name, assumptions)


def _iv_text(iv: Iv) -> list[list[float | None]]:
    """[lo, hi] per channel, JSON-safe (an unbounded side is null)."""
    return [[t if abs(t) != S.INF else None for t in iv.lo], [t if abs(t) != S.INF else None for t in iv.hi]]


def verdict_of(chain_ops: list[Any], nodes: dict[str, NodeResult]) -> tuple[str, str, str | None, dict | None]:
    """(verdict, summary, first break, non-negative tail) of the hidden chain (ops in execution order)."""
    if not chain_ops:
        return "nonnegative-chain", "no hidden layers: nothing to chain", None, None
    top = list(reversed(chain_ops))
    lin = {op.name: nodes[op.name].hidden for op in chain_ops}
    nonlinear = [op for op in top if lin[op.name][0] != "linear"]
    if nonlinear:
        worst = [op for op in nonlinear if lin[op.name][0] != "positively-homogeneous"]
        brk = (worst or nonlinear)[0]
        verdict = "nonlinear" if worst else "positively-homogeneous"
        what = (
            "not linear in the relevance: Theorem 1 does not apply"
            if worst
            else "positively homogeneous but not linear in the relevance (Theorem 1 does not apply; "
            "the paper defers such rules to Nie et al. 2018)"
        )
        summary = f"{verdict}: `{brk.name}` ({brk.kind}) is {what}: {lin[brk.name][2]}"
    else:
        bad = [op for op in top if lin[op.name][1] not in ("nonnegative", "zero")]
        if not bad:
            k = sum(1 for op in chain_ops if str(op.kind) in S.WEIGHTED)
            summary = f"non-negative chain from `{top[0].name}` down to `{top[-1].name}` ({k} linear layers): {THEOREM}"
            return "nonnegative-chain", summary, None, None
        brk, verdict = bad[0], "mixed"
        summary = f"mixed: `{brk.name}` ({brk.kind}) breaks the non-negative chain: {lin[brk.name][2]}"
    tail = _tail(chain_ops, nodes)
    if tail is not None:
        summary += (
            f". Below it, a non-negative chain from `{tail['from']}` down to `{tail['to']}` "
            f"({tail['linear_layers']} linear layers): Theorem 1 applies to that part — whatever reaches "
            f"`{tail['from']}` is mapped towards one rank-1 direction"
        )
    return verdict, summary, brk.name, tail


def _tail(chain_ops: list[Any], nodes: dict[str, NodeResult]) -> dict[str, Any] | None:
    part = []
    for op in chain_ops:  # execution order: bottom up
        h = nodes[op.name].hidden
        if h[0] != "linear" or h[1] not in ("nonnegative", "zero"):
            break
        part.append(op)
    k = sum(1 for op in part if str(op.kind) in S.WEIGHTED)
    if k == 0:
        return None
    return {"from": part[-1].name, "to": part[0].name, "linear_layers": k}


__all__ = ["NodeResult", "StaticResult", "VERDICTS", "param_value", "static"]
