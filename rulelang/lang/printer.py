"""AST -> canonical text: minimal parentheses by precedence, canonical spacing; `parse(format(a)) == a`.

Numbers print as the shortest text that reads back to the same float (`2`, `0.5`, `1e-06`). A negative
`Num` (which the parser never produces: `-1` parses as `Unary('-', Num(1))`) prints in parentheses.
"""

from __future__ import annotations

import json
import math

import yaml

from .ast import (
    DEFAULT_STREAM,
    And,
    Attr,
    Binary,
    Block,
    Call,
    Expr,
    Index,
    Kind,
    Name,
    NameGlob,
    Not,
    Num,
    Or,
    Position,
    Rule,
    RuleFile,
    Selector,
    Unary,
)

#: Binding strength of each binary operator (higher binds tighter); see grammar.lark.
PRECEDENCE: dict[str, int] = {
    "|": 1,
    "&": 2,
    "==": 3,
    "!=": 3,
    "<": 3,
    "<=": 3,
    ">": 3,
    ">=": 3,
    "+": 4,
    "-": 4,
    "*": 5,
    "/": 5,
    "**": 7,
}
_UNARY, _POSTFIX = 6, 8


def format_number(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return repr(float(value))


def _prec(e: Expr) -> int:
    if isinstance(e, Binary):
        return PRECEDENCE[e.op]
    if isinstance(e, Unary):
        return _UNARY
    if isinstance(e, Num) and e.value < 0:
        return 0
    return _POSTFIX


def _wrap(e: Expr, min_prec: int) -> str:
    text = format_expr(e)
    return f"({text})" if _prec(e) < min_prec else text


def format_expr(e: Expr) -> str:
    """Canonical text of an expression."""
    if isinstance(e, Num):
        text = format_number(e.value)
        return f"({text})" if e.value < 0 else text
    if isinstance(e, Name):
        return e.id
    if isinstance(e, Attr):
        base = f"({format_expr(e.value)})" if isinstance(e.value, Num) else _wrap(e.value, _POSTFIX)
        return f"{base}.{e.attr}"
    if isinstance(e, Index):
        return f"{_wrap(e.value, _POSTFIX)}[{format_expr(e.index)}]"
    if isinstance(e, Call):
        args = [format_expr(a) for a in e.args] + [f"{k}={format_expr(v)}" for k, v in e.kwargs]
        return f"{e.func}({', '.join(args)})"
    if isinstance(e, Unary):
        return f"{e.op}{_wrap(e.operand, _UNARY)}"
    if isinstance(e, Binary):
        p = PRECEDENCE[e.op]
        if e.op == "**":  # right-associative; left must be postfix, right may be unary
            return f"{_wrap(e.left, _POSTFIX)} ** {_wrap(e.right, _UNARY)}"
        if p == 3:  # comparisons do not chain
            return f"{_wrap(e.left, 4)} {e.op} {_wrap(e.right, 4)}"
        return f"{_wrap(e.left, p)} {e.op} {_wrap(e.right, p + 1)}"
    raise TypeError(f"not an expression: {e!r}")


def format_block(b: Block) -> str:
    """Canonical text of a body: one `name = expr` per line, then the final expression."""
    lines = [f"{a.name} = {format_expr(a.value)}" for a in b.assigns]
    return "\n".join(lines + [format_expr(b.result)])


_SEL_PREC = {Or: 1, And: 2, Not: 3}


def _sel_wrap(s: Selector, min_prec: int) -> str:
    text = format_selector(s)
    return f"({text})" if _SEL_PREC.get(type(s), 4) < min_prec else text


def format_selector(s: Selector) -> str:
    """Canonical text of a selector."""
    if isinstance(s, Kind):
        return s.name
    if isinstance(s, Position):
        return s.which
    if isinstance(s, NameGlob):
        q = "'" if '"' in s.pattern else '"'
        return f"name({q}{s.pattern}{q})"
    if isinstance(s, Not):
        return f"~{_sel_wrap(s.operand, 3)}"
    if isinstance(s, And):
        return f"{_sel_wrap(s.left, 2)} & {_sel_wrap(s.right, 3)}"
    if isinstance(s, Or):
        return f"{_sel_wrap(s.left, 1)} | {_sel_wrap(s.right, 2)}"
    raise TypeError(f"not a selector: {s!r}")


# ----------------------------------------------------------------------------------------------- YAML
def _scalar(text: str, indent: int) -> str:
    """A YAML scalar for `text` after `key: ` at `indent`: plain when safe, `|` block when multi-line."""
    if "\n" in text:
        pad = " " * (indent + 2)
        return "|\n" + "\n".join(pad + line if line else "" for line in text.split("\n"))
    try:
        plain_ok = (yaml.safe_load(f"k: {text}") == {"k": text}) and " #" not in text
    except yaml.YAMLError:
        plain_ok = False
    return text if plain_ok else json.dumps(text)


def _param_value(v: object) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(_param_value(x) for x in v) + "]"
    text = repr(float(v))  # type: ignore[arg-type]
    return text if ("." in text or "e" in text or "n" in text) else text + ".0"


def _body(key: str, blocks: tuple[tuple[str, Block], ...], streams: tuple[str, ...], indent: int) -> str:
    pad = " " * indent
    texts = {s: format_block(b) for s, b in blocks}
    if len(set(texts.values())) == 1 and len(texts) == len(streams):
        return f"{pad}{key}: {_scalar(next(iter(texts.values())), indent)}\n"
    out = f"{pad}{key}:\n"
    for s, text in texts.items():
        out += f"{pad}  {s}: {_scalar(text, indent + 2)}\n"
    return out


def _rule(r: Rule, streams: tuple[str, ...], indent: int, first_key: str) -> str:
    pad = " " * indent
    out = ""
    if r.match is not None:
        out += f"{first_key}match: {_scalar(format_selector(r.match), indent)}\n"
        out += _body("relevance", r.relevance, streams, indent)
    else:
        out += _body("relevance", r.relevance, streams, indent).replace(pad, first_key, 1)
    if r.forward:
        out += f"{pad}forward:\n"
        for name, e in r.forward:
            out += f"{pad}  {name}: {_scalar(format_expr(e), indent + 2)}\n"
    return out


def format_rule_file(rf: RuleFile) -> str:
    """The canonical YAML text of a loaded rule file (extends flattened, parameters as bound)."""
    out = f"rulelang: {rf.version}\nname: {_scalar(rf.name, 0)}\nsummary: {_scalar(rf.summary, 0)}\n"
    if rf.references:
        out += "references:\n" + "".join(f"  - {_scalar(r, 2)}\n" for r in rf.references)
    if rf.streams != (DEFAULT_STREAM,):
        out += f"streams: [{', '.join(rf.streams)}]\n"
    if rf.params:
        out += "params:\n" + "".join(f"  {k}: {_param_value(v)}\n" for k, v in rf.params)
    if rf.require:
        out += "require:\n" + "".join(f"  - {_scalar(format_expr(e), 2)}\n" for e in rf.require)
    if rf.define:
        out += "define:\n" + "".join(f"  {k}: {_scalar(format_expr(e), 2)}\n" for k, e in rf.define)
    if rf.reference:
        out += f"reference: {rf.reference}\n"
    if rf.conserves:
        out += "conserves: true\n"
    if rf.fit:
        out += "fit:\n"
        for f in rf.fit:
            out += f"  {f.name}:\n    estimator: {f.estimator}\n"
            if f.match is not None:
                out += f"    match: {_scalar(format_selector(f.match), 4)}\n"
    out += _body("init", rf.init, rf.streams, 0)
    out += f"final: {_scalar(format_block(rf.final), 0)}\n"
    if rf.rules:
        out += "rules:\n" + "".join(_rule(r, rf.streams, 4, "  - ") for r in rf.rules)
    if rf.default is not None:
        out += "default:\n" + _rule(rf.default, rf.streams, 2, "  ")
    return out
