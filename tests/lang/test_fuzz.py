"""Fuzzing rule texts (issue 12): mutated library files and grammar-generated expressions in every slot of a
file. Whatever the text, `check_path` returns problems (RuleErrors, each inside the file) and never raises
anything else: no RecursionError, no lark or yaml exception, no KeyError from a table."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from rulelang.errors import RuleError
from rulelang.lang import library
from rulelang.lang.ast import Binary, Call, Name, Num, Unary
from rulelang.lang.loader import check_path
from rulelang.lang.printer import format_expr

LIBRARY = {p.name: p.read_text() for p in library.rule_files()}

_INSERTS = [
    ":", "- ", "  ", "\n", "\n  - ", "[", "]", "{", "}", "*", "&", "&a ", "*a", "x", "(", ")", ",", "'", '"', "|",
    "|\n", ">", "#", "%", "@", "\t", "é", "\u2212", "\u00a0", "!!python/object:os.system ", "!!binary ", "? ",
    "rulelang: 2\n", "extend: /etc/passwd\n", "extend: ../../x.yaml\n", "extend: _lrp\n", "extend: gradient\n",
    "init: target\n", "final: x * R\n", "streams: [a, b]\n", "reference: zeros\n", "conserves: true\n",
    "summary:\n", "params: {eps: -1}\n", "eps: 1e309", "eps: nan", "eps: [1, 2]", "match: first & ~last",
    "match: name(\"fc*\")", "relevance: vjp(R, w=w.pos)", "x[i]", "x0", "y0", "target", ".dp", "-" * 300 + "R",
    " + R" * 120, "vjp(" * 150, "layer(x, w=w ** 2)", "percentile(R, 101)", "where(R > 0, R)",
]  # fmt: skip


def _mutate(text: str, ops: list[tuple[int, int, int, int]]) -> str:
    for kind, a, b, k in ops:
        lines = text.split("\n")
        if kind == 0:  # delete a span
            a %= len(text) + 1
            text = text[:a] + text[a + b % 40 :]
        elif kind == 1:  # insert a token
            a %= len(text) + 1
            text = text[:a] + _INSERTS[k % len(_INSERTS)] + text[a:]
        elif kind == 2:  # duplicate a line
            j = a % len(lines)
            text = "\n".join(lines[: j + 1] + [lines[j]] + lines[j + 1 :])
        elif kind == 3:  # delete a line
            j = a % len(lines)
            text = "\n".join(lines[:j] + lines[j + 1 :])
        else:  # swap two lines
            i, j = a % len(lines), b % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


def _only_rule_errors(name: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_text(text, encoding="utf-8")
        rf, problems = check_path(path)  # anything but a RuleError propagates and fails the test
        assert all(isinstance(p, RuleError) for p in problems)
        assert rf is not None or any(p.severity == "error" for p in problems)
        n_lines = len(text.split("\n"))
        for p in problems:
            if p.line is not None and p.path == str(path):
                assert 1 <= p.line <= n_lines + 1 and (p.col is None or p.col >= 1), p.format()


@given(
    st.sampled_from(sorted(LIBRARY)),
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 1_000)),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_library_files(name: str, ops: list[tuple[int, int, int, int]]) -> None:
    _only_rule_errors(name, _mutate(LIBRARY[name], ops))


# ------------------------------------------------------------------------------------- grammar-based
_names = st.sampled_from(["x", "y", "R", "w", "b", "i", "x0", "y0", "target", "eps", "k", "mp", "zz", "first"])
_funcs = st.sampled_from(
    ["vjp", "layer", "stab", "where", "abs", "clamp", "percentile", "ones_like", "sqrt", "pos", "nope", "sum"]
)


def _exprs() -> st.SearchStrategy:
    leaves = st.one_of(st.floats(0, 1e6, allow_nan=False).map(Num), _names.map(Name))
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.tuples(st.sampled_from(["+", "-", "*", "/", "**", "<", "==", "&", "|"]), inner, inner).map(
                lambda t: Binary(*t)
            ),
            st.tuples(st.sampled_from(["-", "~"]), inner).map(lambda t: Unary(*t)),
            st.builds(
                lambda f, args, kw: Call(f, tuple(args), tuple(kw)),
                _funcs,
                st.lists(inner, max_size=3),
                st.lists(
                    st.tuples(st.sampled_from(["w", "b", "min", "max", "q"]), inner),
                    max_size=2,
                    unique_by=lambda t: t[0],
                ),
            ),
        ),
        max_leaves=10,
    )


_SLOTS = [
    "rulelang: 1\nsummary: s\nparams: {{eps: 1.0e-6, k: 2.0}}\nrequire:\n  - {e}\ndefault: vjp(R)\n",
    "rulelang: 1\nsummary: s\ninit: {e}\ndefault: vjp(R)\n",
    "rulelang: 1\nsummary: s\nfinal: {e}\ndefault: vjp(R)\n",
    "rulelang: 1\nsummary: s\ndefine:\n  d: {e}\nrules:\n  - match: relu\n    relevance: d\n",
    "rulelang: 1\nsummary: s\nrules:\n  - match: linear\n    relevance: {e}\n",
    "rulelang: 1\nsummary: s\nrules:\n  - match: add\n    relevance: |\n      t = {e}\n      t * R\n",
    "rulelang: 1\nsummary: s\nreference: zeros\nrules:\n  - match: conv\n    forward:\n      q: {e}\n"
    "    relevance: x.q * R\n",
    "rulelang: 1\nsummary: s\nstreams: [mp, mn]\nfinal: mp + mn\ndefault:\n  mp: {e}\n  mn: vjp(mn)\n",
]


@given(st.sampled_from(_SLOTS), _exprs())
def test_generated_expressions_in_every_slot(slot: str, e) -> None:  # type: ignore[no-untyped-def]
    _only_rule_errors("gen.yaml", slot.format(e=format_expr(e).replace("\n", " ")))
