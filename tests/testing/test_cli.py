"""`rulelang test`: one line per property, exit codes 0 (all hold), 1 (one fails), 2 (bad file or usage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rulelang.cli import main
from rulelang.commands.test import PROPERTY_NAMES
from rulelang.testing.runner import PROPERTIES

from .conftest import BROKEN


def test_the_help_lists_every_property() -> None:
    assert tuple(PROPERTIES) == PROPERTY_NAMES


def test_passing_properties_exit_0_with_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", "gradient", "--property", "shape", "conserves", "--examples", "2", "--seed", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "  shape: passed (2 examples)" in out.splitlines()
    assert any(
        line.startswith("  conserves: not applicable (") and "conserves: true" in line for line in out.splitlines()
    )
    assert out.rstrip().endswith("1 file: all properties hold")


def test_a_failing_property_exits_1_with_a_runnable_counterexample(capsys: pytest.CaptureFixture[str]) -> None:
    rule = str(BROKEN / "zplus-no-stabilizer.yaml")
    code = main(["test", rule, "--property", "finite", "--examples", "10"])
    out = capsys.readouterr().out
    assert code == 1
    assert "  finite: FAILED after" in out
    start = out.index("# ---- minimal counterexample (runnable Python) ----")
    end = out.index("# ---- end of counterexample ----")
    script = out[start:end]
    assert "class Net(nn.Module):" in script and "x = torch.tensor(" in script
    compile(script, "<counterexample>", "exec")  # valid Python
    assert out.rstrip().endswith("1 file: 1 property failed")


def test_a_bad_file_exits_2_with_the_located_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rulelang: 1\nname: bad\nsummary: s\ninit: y * target\nrules:\n  - match: linear\n    relevance: x * (R\n"
    )
    assert main(["test", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:7:" in err and "Traceback" not in err


def test_an_unknown_rule_name_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "lrp-epsilom"]) == 2
    assert "lrp-epsilon" in capsys.readouterr().err  # did you mean


@pytest.mark.parametrize(
    "argv, message",
    [
        (["test", "lrp-epsilon", "--property", "finit"], "unknown property `finit`"),
        (["test", "lrp-epsilon", "--examples", "0"], "--examples must be at least 1"),
        (["test", "lrp-epsilon", "--seconds", "-1"], "--seconds must be positive"),
    ],
)
def test_bad_usage_exits_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_argparse_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["test", "--examples", "many"])
    assert info.value.code == 2


def test_the_time_cap_stops_new_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", "gradient", "--property", "finite", "shape", "--seconds", "0.000001"])
    out = capsys.readouterr().out
    assert code == 0
    assert "  finite: skipped (time cap reached before the first example)" in out.splitlines()


def test_linear_flag_checks_linearity_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    rule = str(BROKEN / "relative-epsilon.yaml")
    assert main(["test", rule, "--property", "linear_in_R", "--examples", "5"]) == 0  # static: not linear
    assert "linear_in_R: not applicable (on every example: static analysis:" in capsys.readouterr().out
    assert main(["test", rule, "--property", "linear_in_R", "--examples", "5", "--linear"]) == 1
    assert "linear_in_R: FAILED" in capsys.readouterr().out
