"""Parsing: precedence, blocks, selectors, file positions, syntax-error messages."""

from __future__ import annotations

import pytest

from rulelang.errors import RuleError
from rulelang.lang.ast import (
    And,
    Assign,
    Attr,
    Binary,
    Call,
    Index,
    Kind,
    Name,
    NameGlob,
    Not,
    Num,
    Or,
    Position,
    Unary,
)
from rulelang.lang.parser import parse_block, parse_expr, parse_selector

a, b, c = Name("a"), Name("b"), Name("c")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a + b * c", Binary("+", a, Binary("*", b, c))),
        ("a - b - c", Binary("-", Binary("-", a, b), c)),
        ("-a ** 2", Unary("-", Binary("**", a, Num(2)))),
        ("a ** b ** c", Binary("**", a, Binary("**", b, c))),
        ("a ** -b", Binary("**", a, Unary("-", b))),
        ("a > 0 & b < 1 | ~c", Binary("|", Binary("&", Binary(">", a, Num(0)), Binary("<", b, Num(1))), Unary("~", c))),
        ("x[i].dp", Attr(Index(Name("x"), Name("i")), "dp")),
        (
            "layer(x.pos, w=w.pos, b=0)",
            Call("layer", (Attr(Name("x"), "pos"),), (("w", Attr(Name("w"), "pos")), ("b", Num(0)))),
        ),
        ("f()", Call("f")),
        ("1e-9 + .5 + 3.", Binary("+", Binary("+", Num(1e-9), Num(0.5)), Num(3.0))),
        ("(a + b) * c  # comment", Binary("*", Binary("+", a, b), c)),
        ("f(a,\n  b)", Call("f", (a, b))),
    ],
)
def test_expressions(text: str, expected: object) -> None:
    assert parse_expr(text) == expected


def test_block_with_continuation_by_indentation_and_brackets() -> None:
    text = "zp = layer(x,\nw=w.pos)\ns = R / zp  # note\n\nalpha * (x * s)\n  - beta * s"
    block = parse_block(text)
    assert [x.name for x in block.assigns] == ["zp", "s"]
    assert block.result == Binary(
        "-", Binary("*", Name("alpha"), Binary("*", Name("x"), Name("s"))), Binary("*", Name("beta"), Name("s"))
    )
    assert isinstance(block.assigns[0], Assign)


def test_positions_are_file_positions() -> None:
    e = parse_expr("a +\n  foo(b)", path="f.yaml", line=10, col=7)
    assert (e.pos.line, e.pos.col) == (10, 7)
    call = e.right
    assert (call.pos.line, call.pos.col) == (11, 9) and call.pos.path == "f.yaml"
    assert (call.args[0].pos.line, call.args[0].pos.col) == (11, 13)


def test_selectors() -> None:
    s = parse_selector('name("fc*") & linear | ~first')
    assert s == Or(And(NameGlob("fc*"), Kind("linear")), Not(Position("first")))
    assert parse_selector("(relu | add) & last") == And(Or(Kind("relu"), Kind("add")), Position("last"))


@pytest.mark.parametrize(
    "text, line, col, message, hint",
    [
        ("a +", 3, 8, "unexpected end of expression", "expected an expression"),
        ("f(a", 3, 8, "unexpected end of expression", "`)`"),
        ("a b", 3, 7, "unexpected `b`", "an operator"),
        ("a ^ 2", 3, 7, "unexpected character `^`", "`**`"),
        ("a and b", 3, 7, "unexpected `and`", "`&`"),
        ("f(w=1, a)", 3, 12, "positional argument after a keyword", None),
        ("f(w=1, w=2)", 3, 12, "given twice", None),
        ("", 3, 5, "empty expression", "expected an expression"),
        ("a < b < c", 3, 11, "unexpected `<`", None),
    ],
)
def test_syntax_errors(text: str, line: int, col: int, message: str, hint: str | None) -> None:
    with pytest.raises(RuleError) as info:
        parse_expr(text, path="f.yaml", line=3, col=5)
    e = info.value
    assert (e.line, e.col) == (line, col) and message in e.message, e.format()
    if hint:
        assert hint in (e.hint or ""), e.format()
    assert "Traceback" not in e.format()


@pytest.mark.parametrize(
    "text, col, message, hint",
    [
        ("relus", 1, "unknown op kind `relus`", "`relu`"),
        ("relu & ", 7, "unexpected end of selector", "op kind"),
        ("nam('x')", 1, "unknown selector function", None),
        ("name(fc)", 6, "unexpected `fc`", "quoted"),
    ],
)
def test_selector_errors(text: str, col: int, message: str, hint: str | None) -> None:
    with pytest.raises(RuleError) as info:
        parse_selector(text)
    assert info.value.col == col and message in info.value.message, info.value.format()
    if hint:
        assert hint in (info.value.hint or "")


def test_block_errors() -> None:
    with pytest.raises(RuleError, match="no final expression"):
        parse_block("a = 1\nb = 2")
    with pytest.raises(RuleError, match="only the last line") as info:
        parse_block("a * b\n- c", line=5, col=3)
    assert (info.value.line, info.value.col) == (5, 3)
    assert "indent it more" in info.value.hint
    with pytest.raises(RuleError, match="empty body"):
        parse_block("# only a comment\n")
