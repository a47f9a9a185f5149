"""Fail closed (issue 12): the `extend:` sandbox, parameter domains, deep expressions, the summary warning,
library-name hints, and the linear shadowing check agreeing with brute force."""

from __future__ import annotations

import os
from itertools import product
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rulelang.errors import RuleError
from rulelang.lang import library
from rulelang.lang.ast import And, Kind, NameGlob, Not, Or, Position
from rulelang.lang.checker import check
from rulelang.lang.kinds import ALIASES, KINDS
from rulelang.lang.loader import check_path, load, resolve_path
from rulelang.lang.selectors import UNIVERSE, Coverage, atoms, holds

SECRET = "hunter2-SECRET"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def child(path: Path, target: str) -> Path:
    return write(path, f"rulelang: 1\nsummary: c\nextend: {target}\ndefault: vjp(R)\n")


BASE = "rulelang: 1\nsummary: base\nparams: {k: 2.0}\ndefault: vjp(R)\n"


# ------------------------------------------------------------------------------------------------ sandbox
@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp/project/rules/{base,notes}.yaml, tmp/secret/app.yaml (a rule file outside), tmp/secret/env (not one)."""
    write(tmp_path / "project/rules/base.yaml", BASE)
    write(tmp_path / "project/rules/notes.yaml", f"password: {SECRET}\n")
    write(tmp_path / "secret/app.yaml", f"rulelang: 1\nsummary: {SECRET}\ndefault: vjp(R)\n")
    write(tmp_path / "secret/env", f"TOKEN={SECRET}\n")
    return tmp_path


OUTSIDE = [
    ("/etc/passwd", "outside the rule path"),
    ("/proc/self/environ", "outside the rule path"),
    ("../../secret/app.yaml", "outside the rule path"),
    ("../../secret/env", "outside the rule path"),
    ("{tmp}/secret/app.yaml", "outside the rule path"),
    ("./link.yaml", "outside the rule path"),  # a symlink inside the tree to a file outside
    ("link", "links outside the rule path"),
    ("notes", "not a rule file"),  # inside, but not a rule file: never parsed, never echoed
    ("./notes.yaml", "not a rule file"),
    ("./missing.yaml", "file not found"),
    ("no-such-rule", "unknown rule file"),
]


@pytest.mark.parametrize("target, message", OUTSIDE, ids=[t for t, _ in OUTSIDE])
def test_extend_never_reads_outside_the_rule_path(tree: Path, target: str, message: str) -> None:
    rules = tree / "project/rules"
    (rules / "link.yaml").symlink_to(tree / "secret/app.yaml")
    path = child(rules / "c.yaml", target.format(tmp=tree))
    rf, problems = check_path(path)
    assert rf is None and len(problems) == 1
    e = problems[0]
    assert message in e.message, e.format()
    assert (Path(e.path).name, e.line, e.col) == ("c.yaml", 3, 9)  # at the `extend:` value, in the rule file
    assert SECRET not in e.format() and "root:" not in e.format()


def test_extend_inside_the_tree_and_the_library(tree: Path) -> None:
    rules = tree / "project/rules"
    write(rules / "sub/deeper.yaml", "rulelang: 1\nsummary: d\nextend: ../base.yaml\n")
    assert load(child(rules / "a.yaml", "base")).param_dict == {"k": 2.0}  # a sibling by name
    assert load(child(rules / "b.yaml", str(rules / "base.yaml"))).param_dict == {"k": 2.0}  # absolute, inside
    assert load(child(rules / "c.yaml", "./sub/deeper.yaml")).param_dict == {"k": 2.0}  # down and back up
    assert load(child(rules / "d.yaml", "lrp-epsilon")).param_dict == {"eps": 1e-6}  # the library
    # a file in a subfolder cannot climb above the loaded file's folder...
    with pytest.raises(RuleError, match="outside the rule path"):
        load(rules / "sub/deeper.yaml")
    # ... unless the caller adds the folder, by argument or by $RULELANG_PATH
    assert load(rules / "sub/deeper.yaml", search_path=[rules]).param_dict == {"k": 2.0}


def test_rulelang_path_adds_folders_and_names(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tree / "shared"
    write(shared / "house-style.yaml", BASE)
    user = child(tree / "project/mine.yaml", "house-style")
    with pytest.raises(RuleError, match="unknown rule file `house-style`"):
        load(user)
    monkeypatch.setenv("RULELANG_PATH", os.pathsep.join([str(tree / "nowhere"), str(shared)]))
    assert load(user).param_dict == {"k": 2.0}
    assert resolve_path("house-style") == shared / "house-style.yaml"  # names are looked up there too
    assert load("house-style").summary == "base"


def test_a_file_that_is_not_a_rule_file_is_never_echoed(tmp_path: Path) -> None:
    for text in (f"{SECRET}:x:0:0:root:/root:/bin/bash\n", f"PATH=/usr/bin\x00TOKEN={SECRET}\x00", f"- {SECRET}\n"):
        p = write(tmp_path / "secret.yaml", text)
        rf, problems = check_path(p)
        assert rf is None and "missing `rulelang:`" in problems[0].message
        assert SECRET not in problems[0].format() and problems[0].source_line is None
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe" + SECRET.encode())
    rf, problems = check_path(tmp_path / "bin.yaml")
    assert "not UTF-8" in problems[0].message and SECRET not in problems[0].format()


# ------------------------------------------------------------------------------------------- parameter domains
DOMAINS = [
    ("lrp-epsilon", {"eps": -1.0}, "eps > 0"),
    ("lrp-epsilon", {"eps": 0.0}, "eps > 0"),
    ("lrp-zplus", {"eps": -1.0}, "eps > 0"),
    ("lrp-z", {"eps": -1e-9}, "eps > 0"),
    ("lrp-flat", {"eps": -1.0}, "eps > 0"),
    ("lrp-gamma", {"gamma": -0.5}, "gamma >= 0"),
    ("lrp-alpha-beta", {"alpha": 1.0, "beta": -0.0001}, "alpha - beta == 1"),
    ("lrp-zbox", {"lo": 3.0, "hi": -3.0}, "lo < hi"),
    ("lrp-zbox", {"lo": [-1.0, 2.0, -1.0], "hi": [1.0, 1.0, 1.0]}, "lo < hi"),
    ("lrp-zbox", {"epsilon": -1.0}, "epsilon > 0"),
    ("lrp-epsilon-gamma-box", {"lo": 1.0, "hi": 1.0}, "lo < hi"),
    ("dtd-bounded", {"lo": 0.5, "hi": 0.0}, "lo < hi"),
    ("lrp-epsilon-plus", {"epsilon": 0.0}, "epsilon > 0"),
    ("lrp-cmp-alpha1-beta0", {"epsilon": -1e-10}, "epsilon > 0"),
    ("deeplift-rescale", {"thr": 0.0}, "thr > 0"),
    ("deeplift-reveal-cancel", {"thr": -1.0}, "thr > 0"),
    ("rectgrad", {"q": 101.0}, "q <= 100"),
    ("rectgrad", {"q": -1.0}, "q >= 0"),
]


@pytest.mark.parametrize("rule, params, requirement", DOMAINS, ids=[f"{r}-{'-'.join(p)}" for r, p, _ in DOMAINS])
def test_parameter_domains_are_located_errors(rule: str, params: dict, requirement: str) -> None:
    with pytest.raises(RuleError, match="requirement violated") as info:
        load(rule, **params)
    e = info.value
    assert requirement in e.message
    assert e.path is not None and e.line is not None and e.col is not None
    assert requirement in Path(e.path).read_text().split("\n")[e.line - 1]  # at the `require:` line that says it
    if isinstance(next(iter(params.values())), list):
        assert "channel 1" in e.hint


def test_every_library_parameter_has_a_domain() -> None:
    """Every numeric parameter of the library is constrained by some `require:` (no unchecked knob)."""
    from rulelang.lang.visit import names

    for name in library.list_rules():
        rf = load(name)
        required = set().union(*(names(e) for e in rf.require)) if rf.require else set()
        assert {k for k, _ in rf.params} <= required, name


# ---------------------------------------------------------------------------------------------- deep texts
DEEP = {
    "sum of 50,000 terms": " + ".join(["R"] * 50_000),
    "10,000 unary minuses": "-" * 10_000 + "R",
    "** 1 repeated 5,000 times": "R" + " ** 1" * 5_000,
    "3,000 nested calls": "abs(" * 3_000 + "R" + ")" * 3_000,
    "2,000 attributes": "R" + ".pos" * 2_000,
}


@pytest.mark.parametrize("text", DEEP.values(), ids=DEEP.keys())
def test_deep_expressions_are_located_errors(tmp_path: Path, text: str) -> None:
    p = write(tmp_path / "deep.yaml", f"rulelang: 1\nsummary: s\nrules:\n  - match: relu\n    relevance: {text}\n")
    rf, problems = check_path(p)
    assert rf is None and "too deep" in problems[0].message
    assert problems[0].line == 5 and 16 <= problems[0].col <= 16 + len(text)


def test_deep_selector_is_a_located_error(tmp_path: Path) -> None:
    p = write(
        tmp_path / "deep.yaml", "rulelang: 1\nsummary: s\nrules:\n  - match: " + "~" * 500 + "relu\n    relevance: R\n"
    )
    rf, problems = check_path(p)
    assert rf is None and "selector too deep" in problems[0].message and problems[0].line == 4


def test_deeply_parenthesised_but_flat_is_fine() -> None:
    from rulelang.lang.parser import parse_expr

    assert parse_expr("(" * 2_000 + "x" + ")" * 2_000).id == "x"  # type: ignore[attr-defined]


# -------------------------------------------------------------------------------------- summary, names
def test_summary_is_a_warning_outside_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path / "scratch.yaml", "rulelang: 1\ndefault: vjp(R)\n")
    rf = load(p)  # loads
    (w,) = [x for x in check(rf) if "summary" in x.message]
    assert w.severity == "warning" and (w.line, w.col) == (1, 1)
    monkeypatch.setattr(library, "rules_dirs", lambda: [tmp_path])  # the same file inside the library
    rf2, problems = check_path(p)
    assert rf2 is None and problems[0].severity == "error" and "summary" in problems[0].message


def test_library_name_given_as_a_file_name() -> None:
    with pytest.raises(RuleError, match="rule file not found") as info:
        resolve_path("gradient.yaml")
    assert "did you mean the library rule `gradient`?" in info.value.hint
    with pytest.raises(RuleError) as info:
        load("lrp-epsilom.yaml")
    assert "library rule `lrp-epsilon`" in info.value.hint


# -------------------------------------------------------------------------------- shadowing: masks == brute
_sel_atoms = st.one_of(
    st.sampled_from(sorted(KINDS | set(ALIASES))).map(Kind),
    st.sampled_from(["first", "last"]).map(Position),
    st.sampled_from(["fc*", "conv?", "a", "b"]).map(NameGlob),
)
_selectors = st.recursive(
    _sel_atoms,
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda t: And(*t)), st.tuples(inner, inner).map(lambda t: Or(*t)), inner.map(Not)
    ),
    max_leaves=5,
)


def _cases(atom_list):  # type: ignore[no-untyped-def]
    """Every (op kind, truth value of each atom) case."""
    for kind in sorted(UNIVERSE):
        for values in product((False, True), repeat=len(atom_list)):
            yield kind, dict(zip(atom_list, values))


def _brute_covered(s, earlier) -> bool:  # type: ignore[no-untyped-def]
    """The former quadratic check: enumerate every (kind, atom truth) case."""
    atom_list = sorted(atoms(s).union(*(atoms(e) for e in earlier)))
    return all(any(holds(e, k, t) for e in earlier) for k, t in _cases(atom_list) if holds(s, k, t))


@given(st.lists(_selectors, min_size=1, max_size=8))
def test_coverage_agrees_with_brute_force(selectors: list) -> None:
    cov = Coverage()
    for k, s in enumerate(selectors):
        expected = bool(selectors[:k]) and _brute_covered(s, selectors[:k])
        assert cov.shadowed(s) == expected, (s, selectors[:k])
        cov.add(s)


_simple_atoms = st.one_of(
    st.sampled_from(sorted(KINDS | set(ALIASES) | {"first", "last", "nope"})),
    st.sampled_from(['name("fc*")', "name( 'b?' )", 'name("")']),
)


@given(st.lists(_simple_atoms, min_size=1, max_size=5), st.sampled_from(["&", "|", " & ", "  |  "]), st.booleans())
def test_simple_selector_fast_path_equals_the_parser(atoms_: list[str], op: str, pad: bool) -> None:
    """The regex fast path for `a & b & c` / `a | b` selectors builds the parser's AST, positions included."""
    from rulelang.lang.parser import _cached_ast, _located, _simple_selector

    text = (" " if pad else "") + op.join(atoms_)
    loc = _located(text, "f.yaml", 4, 12, None)
    fast = _simple_selector(loc)
    try:
        slow = _cached_ast(loc, 0, len(text), "sel_start", "selector")
    except RuleError:
        assert fast is None  # every error is the parser's
        return
    assert fast is not None and fast == slow

    def positions(s) -> list:  # type: ignore[no-untyped-def]
        kids = [getattr(s, k) for k in ("left", "right", "operand") if hasattr(s, k)]
        return [(type(s).__name__, s.pos)] + [p for k in kids for p in positions(k)]

    assert positions(fast) == positions(slow)


def test_oversized_files_are_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rulelang.lang import loader

    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 200)
    big = write(tmp_path / "big.yaml", "rulelang: 1\nsummary: s\ndefault: vjp(R)\n# " + SECRET * 20 + "\n")
    rf, problems = check_path(big)
    assert rf is None and "too large for a rule file" in problems[0].message
    rf, problems = check_path(child(tmp_path / "c.yaml", "big"))
    assert "too large" in problems[0].message and (problems[0].line, problems[0].col) == (3, 9)
    assert SECRET not in problems[0].format()
