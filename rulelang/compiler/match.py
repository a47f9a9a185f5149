"""Matching: each model op gets the first rule whose selector matches it (or the file's `default:`)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from ..errors import CompileError
from ..graph.ir import Op, OpGraph
from ..lang import ast as A
from ..lang.kinds import expand


def selector_matches(sel: A.Selector, op: Op) -> bool:
    """Whether a selector (AST) matches one op."""
    if isinstance(sel, A.Kind):
        return op.kind in expand(sel.name)
    if isinstance(sel, A.Position):
        return op.first if sel.which == "first" else op.last
    if isinstance(sel, A.NameGlob):
        names = [op.name, op.out.name] + ([op.module] if op.module else [])
        return any(fnmatch.fnmatchcase(n, sel.pattern) for n in names)
    if isinstance(sel, A.And):
        return selector_matches(sel.left, op) and selector_matches(sel.right, op)
    if isinstance(sel, A.Or):
        return selector_matches(sel.left, op) or selector_matches(sel.right, op)
    if isinstance(sel, A.Not):
        return not selector_matches(sel.operand, op)
    raise TypeError(f"not a selector: {sel!r}")


@dataclass
class PlanRow:
    op: Op
    rule: A.Rule
    rule_index: int | None  # position in `rules:`; None for the default rule


@dataclass
class Plan:
    """Which rule handles which op: printable as a table."""

    rows: list[PlanRow]
    rule_file: A.RuleFile

    def rule_for(self, op: Op) -> A.Rule:
        return self._by_op[op.name]

    def __post_init__(self) -> None:
        self._by_op = {r.op.name: r.rule for r in self.rows}

    def __str__(self) -> str:
        head = ("node", "kind", "target", "rule", "file:line")
        body = []
        for r in self.rows:
            label = "default" if r.rule_index is None else f"rules[{r.rule_index}]"
            if r.rule.match is not None:
                from ..lang.printer import format_selector

                label += f" {format_selector(r.rule.match)}"
            pos = r.rule.pos
            line = f"{Path(pos.path).name if pos.path else ''}:{pos.line}" if pos else "-"
            body.append((r.op.name, r.op.kind, r.op.target, label, line))
        widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*row) for row in body]
        path = self.rule_file.path or self.rule_file.name
        return f"plan for {path}:\n" + "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def match(graph: OpGraph, rf: A.RuleFile) -> Plan:
    """First-match-wins assignment; fails closed listing every op no rule matches."""
    rows: list[PlanRow] = []
    unmatched: list[Op] = []
    for op in graph.ops:
        for k, rule in enumerate(rf.rules):
            if rule.match is not None and selector_matches(rule.match, op):
                rows.append(PlanRow(op, rule, k))
                break
        else:
            if rf.default is not None:
                rows.append(PlanRow(op, rf.default, None))
            else:
                unmatched.append(op)
    if unmatched:
        lines = [
            f"  {op.name}: kind `{op.kind}`, {op.target}" + (f"  ({op.source})" if op.source else "")
            for op in unmatched
        ]
        where = rf.path or rf.name
        raise CompileError(
            f"{where}: no rule matches {len(unmatched)} node(s) of the model:\n"
            + "\n".join(lines)
            + "\n  add a rule for these op kinds, or a `default:` rule (e.g. `default: vjp(R)`)"
        )
    return Plan(rows, rf)
