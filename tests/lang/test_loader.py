"""Loading: the library, parameters and `require:`, `extend:`, streams, YAML positions, printer round trips."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rulelang.errors import RuleError
from rulelang.lang import library
from rulelang.lang.ast import DEFAULT_STREAM, Block, RuleFile
from rulelang.lang.checker import check
from rulelang.lang.loader import check_file, load
from rulelang.lang.parser import parse_block, parse_expr, parse_selector
from rulelang.lang.printer import format_block, format_expr, format_rule_file, format_selector

NAMES = library.list_rules()
OURS = ["gradient", "lrp-epsilon", "lrp-zplus"]


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_library_has_our_files() -> None:
    assert set(OURS) <= set(NAMES)
    assert library.find_rule("lrp-epsilon").name == "lrp-epsilon.yaml"
    assert library.rules_dir().name == "rules"
    with pytest.raises(RuleError, match="unknown rule") as info:
        library.find_rule("lrp-epsilom")
    assert "lrp-epsilon" in info.value.hint


@pytest.mark.parametrize("name", [p.stem for p in library.rule_files()])
def test_every_library_file_loads_and_checks(name: str) -> None:
    rf = check_file(library.find_rule(name))
    assert rf.summary and rf.name
    assert all(len(r.relevance) == len(rf.streams) for r in rf.rules)
    assert all(p.severity == "warning" for p in check(rf))


def _bodies(rf: RuleFile) -> list[Block]:
    out = [b for _, b in rf.init] + [rf.final]
    for r in list(rf.rules) + ([rf.default] if rf.default else []):
        out += [b for _, b in r.relevance]
    return out


@pytest.mark.parametrize("name", NAMES)
def test_printer_round_trip_on_library(name: str) -> None:
    rf = load(name)
    for b in _bodies(rf):
        assert parse_block(format_block(b)) == b
    for _, e in rf.define + tuple(f for r in rf.rules for f in r.forward):
        assert parse_expr(format_expr(e)) == e
    for r in rf.rules:
        assert parse_selector(format_selector(r.match)) == r.match


@pytest.mark.parametrize("name", NAMES)
def test_format_rule_file_round_trip(name: str, tmp_path: Path) -> None:
    rf = load(name)
    p = write(tmp_path, f"{rf.name}.yaml", format_rule_file(rf))
    again = load(p)
    assert dataclasses.replace(again, extends=()) == dataclasses.replace(rf, extends=())


def test_our_files() -> None:
    g = load("gradient")
    assert g.default is not None and not g.rules and format_block(g.default.relevance[0][1]) == "vjp(R)"
    assert format_block(g.init[0][1]) == "target" and format_block(g.final) == "R"
    eps = load("lrp-epsilon")
    assert eps.param_dict == {"eps": 1e-6}
    assert format_block(eps.rules[0].relevance[0][1]) == "x * vjp(R / stab(layer(x), eps))"
    zp = load("lrp-zplus")
    assert "b=b.pos" in format_block(zp.rules[0].relevance[0][1])


def test_param_override_and_types() -> None:
    assert load("lrp-epsilon", eps=0.25).param_dict["eps"] == 0.25
    assert load("lrp-epsilon", eps=[0.1, 0.2]).param_dict["eps"] == (0.1, 0.2)
    with pytest.raises(RuleError, match="unknown parameter `epz`") as info:
        load("lrp-epsilon", epz=1)
    assert "did you mean `eps`" in info.value.hint
    for bad in ("abc", True, None, float("nan"), [], {"a": 1}):
        with pytest.raises(RuleError, match="must be a finite number"):
            load("lrp-epsilon", eps=bad)


REQ = """rulelang: 1
summary: t
params:
  alpha: 2.0
  beta: 1.0
  gains: [1, 2]
require:
  - alpha - beta == 1
  - beta >= 0 & gains > 0
default: vjp(R)
"""


def test_require(tmp_path: Path) -> None:
    p = write(tmp_path, "req.yaml", REQ)
    assert load(p).param_dict["alpha"] == 2.0
    assert load(p, alpha=1.1, beta=0.1).param_dict["beta"] == 0.1  # == is tolerant
    with pytest.raises(RuleError, match="requirement violated") as info:
        load(p, alpha=3.0)
    assert (info.value.line, info.value.col) == (8, 5) and "alpha=3" in info.value.hint
    with pytest.raises(RuleError, match="requirement violated") as info:
        load(p, gains=[1, -1])
    assert info.value.line == 9 and "channel 1" in info.value.hint


def test_extend(tmp_path: Path) -> None:
    write(
        tmp_path,
        "base.yaml",
        "rulelang: 1\nsummary: base\nparams: {eps: 1.0, k: 2.0}\n"
        "define:\n  s: R / stab(y, eps)\nrules:\n  - match: relu\n    relevance: R\n"
        "  - match: linear\n    relevance: x * vjp(R / stab(layer(x), eps))\n",
    )
    child = write(
        tmp_path,
        "child.yaml",
        "rulelang: 1\nsummary: child\nextend: base\nparams: {eps: 0.5}\n"
        "rules:\n  - match: avgpool\n    relevance: x * vjp(s)\n",
    )
    rf = load(child)
    assert rf.name == "child" and rf.param_dict == {"eps": 0.5, "k": 2.0}
    assert [format_selector(r.match) for r in rf.rules] == ["avgpool", "relu", "linear"]
    assert rf.extends == (str(tmp_path / "base.yaml"),)
    assert load(child, k=3).param_dict["k"] == 3.0
    (tmp_path / "sub").mkdir()
    nested = write(tmp_path, "sub/n.yaml", "rulelang: 1\nsummary: n\nextend: ../child.yaml\n")
    with pytest.raises(RuleError, match="outside the rule path"):  # above the loaded file's folder
        load(nested)
    assert len(load(nested, search_path=[tmp_path]).rules) == 3  # unless the caller adds the folder
    lib_child = write(tmp_path, "lib.yaml", "rulelang: 1\nsummary: c\nextend: lrp-epsilon\nparams: {eps: 0.1}\n")
    assert load(lib_child).param_dict["eps"] == 0.1


STREAMS = """rulelang: 1
summary: two streams
reference: zeros
streams: [mp, mn]
init: target
final: (x - x0).pos * mp + (x - x0).neg * mn
rules:
  - match: linear
    forward:
      dp: layer((x - x0).pos, w=w.pos, b=0)
    relevance: vjp(mp + mn)
  - match: relu
    relevance:
      mp: mp * x.dp
      mn: mn
default:
  relevance: vjp(mp)
"""


def test_streams(tmp_path: Path) -> None:
    rf = load(write(tmp_path, "s.yaml", STREAMS))
    assert rf.streams == ("mp", "mn") and rf.reference == "zeros"
    assert [s for s, _ in rf.init] == ["mp", "mn"]
    lin, relu = rf.rules
    assert lin.relevance[0][1] == lin.relevance[1][1] and lin.forward[0][0] == "dp"
    assert [format_block(b) for _, b in relu.relevance] == ["mp * x.dp", "mn"]
    assert rf.default is not None and rf.default.match is None
    single = load("lrp-epsilon")
    assert single.streams == (DEFAULT_STREAM,) and single.rules[0].relevance[0][0] == "R"


def test_defaults(tmp_path: Path) -> None:
    rf = load(write(tmp_path, "my-rule.yaml", "rulelang: 1\nsummary: s\ndefault: R\n"))
    assert rf.name == "my-rule" and format_block(rf.init[0][1]) == "y * target"
    assert format_block(rf.final) == "R" and rf.params == ()


def test_positions_in_every_scalar_style(tmp_path: Path) -> None:
    text = (
        "rulelang: 1\n"
        "summary: s\n"
        "rules:\n"
        "  - match: linear\n"  # 4
        "    relevance: |\n"  # 5
        "      z = layer(x)\n"  # 6
        "      x * vjp(R / z)\n"  # 7
        "  - match: avgpool\n"  # 8
        "    relevance: >\n"  # 9
        "      x * vjp(R /\n"  # 10
        "        stab(y, 1))\n"  # 11
        "  - match: relu\n"  # 12
        '    relevance: "R *\n'  # 13
        '      (x > 0)"\n'  # 14
        "  - match: 'add'\n"  # 15
        "    relevance: 'x[i] * R'\n"  # 16
        "  - match: cat\n"  # 17
        "    relevance: vjp(R)\n"
    )  # 18
    rf = load(write(tmp_path, "p.yaml", text))
    lin, avg, relu, add, cat = rf.rules
    block = lin.relevance[0][1]
    assert (block.assigns[0].pos.line, block.assigns[0].pos.col) == (6, 7)
    call = block.result.right  # vjp(R / z)
    assert (call.pos.line, call.pos.col) == (7, 11)
    assert (call.args[0].right.pos.line, call.args[0].right.pos.col) == (7, 19)
    stab = avg.relevance[0][1].result.right.args[0].right
    assert (stab.pos.line, stab.pos.col) == (11, 9)
    assert (stab.args[1].pos.line, stab.args[1].pos.col) == (11, 17)
    zero = relu.relevance[0][1].result.right.right
    assert (zero.pos.line, zero.pos.col) == (14, 12)
    assert (add.match.pos.line, add.match.pos.col) == (15, 13)
    i = add.relevance[0][1].result.left.index
    assert (i.pos.line, i.pos.col) == (16, 19)
    r = cat.relevance[0][1].result.args[0]
    assert (r.pos.line, r.pos.col, r.pos.path) == (18, 20, str(tmp_path / "p.yaml"))


def test_warnings(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "w.yaml",
        "rulelang: 1\nsummary: s\nrules:\n  - match: linear\n    relevance: R\n"
        "  - match: dense\n    relevance: R\n  - match: relu & ~relu\n    relevance: R\n"
        "  - match: relu\n    relevance: |\n      unused = 1\n      R\n",
    )
    rf = load(p)  # warnings do not raise
    found = [(w.line, w.message) for w in check(rf)]
    assert all(w.severity == "warning" for w in check(rf))
    assert [line for line, _ in found] == [6, 8, 12]
    assert "never match" in found[0][1] and "never match" in found[1][1] and "never used" in found[2][1]


def test_kind_rules_for_w_and_index(tmp_path: Path) -> None:
    ok = (
        'rulelang: 1\nsummary: s\nrules:\n  - match: name("fc*") & linear\n    relevance: vjp(R, w=w.pos)\n'
        "  - match: add | relu\n    relevance: x[i] * R\n"
    )
    load(write(tmp_path, "ok.yaml", ok))
    bad = ok.replace('name(\\"fc*\\") & linear', 'name("fc*") | linear').replace(
        'name("fc*") & linear', 'name("fc*") | linear'
    )
    with pytest.raises(RuleError, match="not defined for rules matching"):
        load(write(tmp_path, "bad.yaml", bad))


def test_cli_summary(capsys: pytest.CaptureFixture[str]) -> None:
    from rulelang.cli import main

    assert main(["check", str(library.find_rule("lrp-epsilon")), "gradient"]) == 0
    out = capsys.readouterr().out.splitlines()
    n = len(load("lrp-epsilon").rules)
    assert n >= 5
    assert out[0].endswith(f": ok  lrp-epsilon \u2014 {n} rules, params eps=1e-06")
    assert out[1] == "gradient: ok  gradient \u2014 0 rules + default"
    assert main(["check", "lrp-epsilon", "-p", "eps=0.5"]) == 0
    assert "eps=0.5" in capsys.readouterr().out
    assert main(["check"]) == 0  # the whole library


def test_public_entry_point_and_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, rulelang; rf = rulelang.load('lrp-epsilon', eps=0.1); "
        "import rulelang.lang.checker, rulelang.commands.check; "
        "assert rf.param_dict['eps'] == 0.1; assert 'torch' not in sys.modules, 'lang imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
