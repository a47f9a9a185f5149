"""Property tests: generated text only ever parses or raises RuleError (positioned inside the text), and
generated ASTs survive format -> parse unchanged."""

from __future__ import annotations

import keyword
import string
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulelang.errors import RuleError
from rulelang.lang.ast import And, Attr, Binary, Block, Call, Index, Kind, Name, NameGlob, Not, Num, Or, Position, Unary
from rulelang.lang.kinds import ALIASES, KINDS
from rulelang.lang.loader import check_path
from rulelang.lang.parser import parse_block, parse_expr, parse_selector
from rulelang.lang.printer import PRECEDENCE, format_block, format_expr, format_selector

LINE, COL = 7, 13


def _inside(e: RuleError, text: str) -> bool:
    lines = text.split("\n")
    k = e.line - LINE
    return 0 <= k < len(lines) and COL <= e.col <= COL + len(lines[k])


def _try(text: str) -> None:
    try:
        parse_expr(text, line=LINE, col=COL)
    except RuleError as e:
        assert e.line is not None and e.col is not None and _inside(e, text), (text, e.format())


_TOKENS = [
    "x",
    "R",
    "eps",
    "w",
    "1",
    "2.5",
    "1e-9",
    "+",
    "-",
    "*",
    "/",
    "**",
    "==",
    "<=",
    ">",
    "&",
    "|",
    "~",
    "(",
    ")",
    "[",
    "]",
    ",",
    ".",
    "pos",
    "=",
    "vjp(",
    "stab(",
    "\n",
    "\n  ",
    "#c\n",
    "$",
    "^",
]


@given(st.lists(st.sampled_from(_TOKENS), max_size=25), st.sampled_from([" ", ""]))
def test_token_soup_parses_or_fails_cleanly(tokens: list[str], sep: str) -> None:
    text = sep.join(tokens)
    _try(text)
    try:
        parse_block(text, line=LINE, col=COL)
    except RuleError as e:
        assert _inside(e, text), (text, e.format())


@given(st.text(alphabet=string.printable + "αβ", max_size=60))
def test_arbitrary_text_through_parse_expr(text: str) -> None:
    _try(text)
    for f in (parse_block, parse_selector):
        try:
            f(text)
        except RuleError:
            pass


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.text(max_size=200), st.sampled_from(["", "rulelang: 1\nsummary: s\n", "rulelang: 1\nsummary: s\nrules:\n  - "])
)
def test_arbitrary_text_through_the_loader(tmp_path: Path, text: str, prefix: str) -> None:
    p = tmp_path / "gen.yaml"
    p.write_text(prefix + text, encoding="utf-8")
    rf, problems = check_path(p)  # only RuleError ever escapes (check_path collects them)
    assert rf is not None or any(x.severity == "error" for x in problems)


# ------------------------------------------------------------------------------------------- AST round trip
_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,4}", fullmatch=True).filter(lambda s: not keyword.iskeyword(s))
_nums = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)


def _exprs() -> st.SearchStrategy:
    leaves = st.one_of(_nums.map(Num), _names.map(Name))
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.tuples(st.sampled_from(sorted(PRECEDENCE)), inner, inner).map(lambda t: Binary(*t)),
            st.tuples(st.sampled_from(["-", "+", "~"]), inner).map(lambda t: Unary(*t)),
            st.tuples(inner, _names).map(lambda t: Attr(*t)),
            st.tuples(inner, inner).map(lambda t: Index(*t)),
            st.builds(
                lambda f, args, kw: Call(f, tuple(args), tuple(dict(kw).items())),
                _names,
                st.lists(inner, max_size=3),
                st.lists(st.tuples(_names, inner), max_size=2),
            ),
        ),
        max_leaves=12,
    )


@given(_exprs())
def test_expr_round_trip(e) -> None:  # type: ignore[no-untyped-def]
    assert parse_expr(format_expr(e)) == e


@given(st.lists(st.tuples(_names, _exprs()), max_size=3), _exprs())
def test_block_round_trip(assigns, result) -> None:  # type: ignore[no-untyped-def]
    from rulelang.lang.ast import Assign

    b = Block(tuple(Assign(n, v) for n, v in assigns), result)
    assert parse_block(format_block(b)) == b


_sel_atoms = st.one_of(
    st.sampled_from(sorted(KINDS | set(ALIASES))).map(Kind),
    st.sampled_from(["first", "last"]).map(Position),
    st.text(alphabet=string.ascii_letters + "*?.[]_0123456789", max_size=8).map(NameGlob),
)


@given(
    st.recursive(
        _sel_atoms,
        lambda inner: st.one_of(
            st.tuples(inner, inner).map(lambda t: And(*t)),
            st.tuples(inner, inner).map(lambda t: Or(*t)),
            inner.map(Not),
        ),
        max_leaves=8,
    )
)
def test_selector_round_trip(s) -> None:  # type: ignore[no-untyped-def]
    assert parse_selector(format_selector(s)) == s


@given(
    _exprs(), st.integers(0, 200), st.integers(0, 3), st.sampled_from(["", ")", "(", ",", "**", "\n", "=", "x ", "."])
)
def test_mutated_grammar_strings_parse_or_fail_cleanly(e, at, cut, insert) -> None:  # type: ignore[no-untyped-def]
    """Grammar-derived text (a generated AST, printed), then damaged: parses, or fails inside the text."""
    text = format_expr(e)
    at = min(at, len(text))
    _try(text[:at] + insert + text[at + cut :])
