"""Every builtin record is complete (signature, contexts, a lowering the compiler resolves, an `apply` convention
the evaluator has, a transfer key), the checker accepts exactly the builtin functions, the grammar's operators are
all builtins, and each primitive lowers to what it says."""

from __future__ import annotations

import importlib.util
import json
import math
import operator
from pathlib import Path

import pytest
import torch
import torch.fx as fx

from rulelang.compiler.emitter import Emitter
from rulelang.compiler.evaluate import TARGETS, Scope, resolve
from rulelang.compiler.lower import NodeScope
from rulelang.errors import RuleError
from rulelang.lang import builtins as B
from rulelang.lang.checker import check
from rulelang.lang.loader import load_unchecked
from rulelang.lang.params import evaluate as evaluate_require
from rulelang.lang.parser import lark_parser, parse_expr

IDS = [f"{b.form}:{b.name}/{b.max_args}" for b in B.BUILTINS]


@pytest.mark.parametrize("b", B.BUILTINS, ids=IDS)
def test_each_builtin_has_every_part(b: B.Builtin) -> None:
    assert b.name and b.form in ("function", "operator", "attribute") and b.doc and b.usage
    assert 0 <= b.min_args <= b.max_args
    assert b.contexts and set(b.contexts) <= set(B.CONTEXTS)
    assert b.transfer, "the static analysis needs a transfer key"
    assert set(b.optional) <= set(b.keywords) and (not b.needs_optional or b.optional)
    assert callable(getattr(Scope, f"apply_{b.apply}", None)) or b.node_bound, f"no Scope.apply_{b.apply}"
    if b.node_bound:
        assert b.form == "function" and b.lowering == f"node.{b.name}" and resolve(b.lowering) is None
        assert callable(getattr(NodeScope, b.name, None)), f"the lowering scope provides no `{b.name}`"
    else:
        assert callable(resolve(b.lowering)) and TARGETS[b] is resolve(b.lowering)
    assert not b.keywords_need_weights or b.node_bound
    if b.scalar is not None:
        assert b.form == "function"
        value = b.scalar(*[2.0] * b.min_args)
        assert isinstance(value, float) and math.isfinite(value)


def test_tables_are_keyed_by_their_records() -> None:
    assert all(B.FUNCTIONS[n].name == n and B.FUNCTIONS[n].form == "function" for n in B.FUNCTIONS)
    assert all(B.BINARY[s].max_args == 2 and B.UNARY.get(s, B.BINARY[s]).form == "operator" for s in B.BINARY)
    assert set(B.ATTRIBUTES) == set(B.ELEMENTWISE_ATTRS) == {"pos", "neg", "abs"}
    assert B.NODE_FUNCTIONS["layer"] == ("rule", "forward") and B.NODE_FUNCTIONS["vjp"] == ("rule",)
    assert all(set(contexts) <= {"rule", "forward"} for contexts in B.NODE_FUNCTIONS.values())
    assert len({(b.form, b.name, b.max_args) for b in B.BUILTINS}) == len(B.BUILTINS)


def test_transfer_keys_are_the_static_analysis_table() -> None:
    keys = {b.transfer for b in B.BUILTINS}  # builtins with the same abstract meaning may share a key
    assert keys <= set(B.FUNCTIONS) | set(B.BINARY) | {f"u{s}" for s in B.UNARY}
    assert {b.transfer for b in B.BINARY.values()} == set(B.BINARY)
    assert {b.transfer for b in B.UNARY.values()} == {f"u{s}" for s in B.UNARY}
    if importlib.util.find_spec("rulelang.analysis.absint") is not None:  # the analysis room, when present
        from rulelang.analysis.absint import TRANSFER

        assert keys <= set(TRANSFER), keys - set(TRANSFER)


def test_grammar_operators_are_exactly_the_operator_builtins() -> None:
    terminals = {t.name: t.pattern.value for t in lark_parser().terminals}
    binary = {terminals[n] for n in ("PLUS", "MINUS", "STAR", "SLASH", "POW", "AMP", "BAR")}
    binary |= set(terminals["CMP_OP"].split("|"))
    unary = {terminals[n] for n in ("PLUS", "MINUS", "TILDE")}
    assert set(B.BINARY) == binary
    assert set(B.UNARY) == unary
    for symbol in B.BINARY:
        assert parse_expr(f"a {symbol} b").op == symbol
    for symbol in B.UNARY:
        assert parse_expr(f"{symbol}a").op == symbol


def _problems(tmp_path: Path, body: str, final: str = "R") -> list[RuleError]:
    path = tmp_path / "t.yaml"
    path.write_text(
        f"rulelang: 1\nname: t\nsummary: t\ninit: target\nfinal: {json.dumps(final)}\ndefault: {json.dumps(body)}\n"
    )
    return [p for p in check(load_unchecked(path)) if p.severity == "error"]


def _call_for(b: B.Builtin) -> str:
    args = ["R"] * b.min_args + ([f"{b.optional[0]}=0"] if b.needs_optional else [])
    return f"{b.name}({', '.join(args)})"


@pytest.mark.parametrize("b", list(B.FUNCTIONS.values()), ids=list(B.FUNCTIONS))
def test_the_checker_accepts_each_builtin_function_where_its_record_allows(tmp_path: Path, b: B.Builtin) -> None:
    assert not _problems(tmp_path, _call_for(b))
    if "final" not in b.contexts:
        problems = _problems(tmp_path, "R", final=_call_for(b))
        assert any(f"`{b.name}` is not available" in p.message for p in problems)


@pytest.mark.parametrize("name", ["relu", "softmax", "layers", "gradient", "clip"])
def test_the_checker_rejects_every_other_function_name(tmp_path: Path, name: str) -> None:
    assert any(p.message == f"unknown function `{name}`" for p in _problems(tmp_path, f"{name}(R)"))


def test_optional_arguments_by_position_or_keyword(tmp_path: Path) -> None:
    assert any("`min` both by position and by keyword" in p.message for p in _problems(tmp_path, "clamp(R, 0, min=1)"))
    assert any("needs `min` or `max`" in p.message for p in _problems(tmp_path, "clamp(R)"))
    assert not _problems(tmp_path, "clamp(R, max=1)")


def test_require_functions_are_the_builtins_with_a_scalar() -> None:
    assert set(B.SCALAR_FUNCTIONS) == {"abs", "sqrt", "exp", "log", "sign", "maximum", "minimum"}
    assert evaluate_require(parse_expr("maximum(a, 2) + sign(-a) * sqrt(4)"), {"a": 3.0}) == 1.0


# ------------------------------------------------------------------------------------------ lowering semantics
_X = torch.tensor([[-2.0, -0.5, 0.0, 1.5, 3.0], [0.25, -1.0, 2.0, -3.0, 0.5]], dtype=torch.float64)
_T = 0.75

#: What each function computes on (x, t=0.75, ...) -- independent of the lowering.
_FUNCTION_REFERENCES = {
    "stab": (2, lambda x, t: x + t * torch.where(x >= 0, 1.0, -1.0)),
    "where": (3, lambda x, t, u: torch.where(x > 0, t, u)),
    "clamp": (3, lambda x, t, u: x.clamp(-t, u)),
    "percentile": (2, lambda x, t: torch.quantile(x, torch.tensor(0.5, dtype=x.dtype), dim=1, keepdim=True)),
    "maximum": (2, lambda x, t: torch.maximum(x, x * t)),
    "minimum": (2, lambda x, t: torch.minimum(x, x * t)),
    "pos": (1, lambda x: x.clamp(min=0)),
    "neg": (1, lambda x: x.clamp(max=0)),
    "abs": (1, lambda x: x.abs()),
    "sign": (1, torch.sign),
    "exp": (1, torch.exp),
    "log": (1, lambda x: torch.log(x.abs() + 1)),
    "sqrt": (1, lambda x: torch.sqrt(x.abs())),
    "ones_like": (1, torch.ones_like),
    "zeros_like": (1, torch.zeros_like),
    "sum": (1, lambda x: x.sum(1, keepdim=True)),
    "mean": (1, lambda x: x.mean(1, keepdim=True)),
    "max": (1, lambda x: x.amax(1, keepdim=True)),
    "min": (1, lambda x: x.amin(1, keepdim=True)),
}
#: The rule-language arguments matching each reference (in terms of x and the constant t).
_ARGUMENTS = {
    "where": "x > 0, 0.75, u",
    "clamp": "x, -0.75, u",
    "percentile": "x, 50",
    "maximum": "x, x * 0.75",
    "minimum": "x, x * 0.75",
    "log": "abs(x) + 1",
    "sqrt": "abs(x)",
    "stab": "x, 0.75",
}


def _lower(text: str) -> torch.Tensor:
    em = Emitter()
    x = em.placeholder("x")
    u = em.placeholder("u")
    value = Scope(em, {"x": lambda: x, "u": lambda: u}, {}).eval(parse_expr(text))
    em.output(value)
    gm = fx.GraphModule(torch.nn.Module(), em.graph)
    return gm(_X, torch.full_like(_X, 2.0 * _T))


@pytest.mark.parametrize("name", [n for n, b in B.FUNCTIONS.items() if not b.node_bound])
def test_each_function_lowers_to_what_it_computes(name: str) -> None:
    assert name in _FUNCTION_REFERENCES, f"add what `{name}` computes to _FUNCTION_REFERENCES"
    n, ref = _FUNCTION_REFERENCES[name]
    text = f"{name}({_ARGUMENTS.get(name, 'x')})"
    extra = [torch.tensor(_T, dtype=_X.dtype), torch.full_like(_X, 2.0 * _T)][: n - 1]
    expected = ref(_X, *extra)
    torch.testing.assert_close(_lower(text).to(_X.dtype).expand_as(expected), expected)


_OPERATOR_REFERENCES = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "**": lambda a, b: a.abs() ** b,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@pytest.mark.parametrize("symbol", list(B.BINARY))
def test_each_operator_lowers_to_what_it_computes(symbol: str) -> None:
    if symbol in ("&", "|"):
        got = _lower(f"(x > 0) {symbol} (u > x)")
        want = (_X > 0) & (2 * _T > _X) if symbol == "&" else (_X > 0) | (2 * _T > _X)
    else:
        left = "abs(x)" if symbol == "**" else "x"
        got = _lower(f"{left} {symbol} u")
        want = _OPERATOR_REFERENCES[symbol](_X, torch.full_like(_X, 2 * _T))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(_lower("-x"), -_X)
    torch.testing.assert_close(_lower("+x"), _X)
    torch.testing.assert_close(_lower("~(x > 0)"), ~(_X > 0))
    torch.testing.assert_close(_lower("x.pos + x.neg"), _X)
