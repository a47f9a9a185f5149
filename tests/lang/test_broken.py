"""The corpus of broken rule files: each reports its error at the exact line and column, and `rulelang check`
exits 1 with a formatted error, never a traceback. Each file's first line is `# expect: LINE:COL message`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rulelang.cli import main
from rulelang.lang.loader import check_path

BROKEN = Path(__file__).parent / "broken"
FILES = sorted(BROKEN.glob("*.yaml"))


def expectation(path: Path) -> tuple[int, int, str]:
    m = re.match(r"# expect: (\d+):(\d+) (.*)", path.read_text().split("\n")[0])
    assert m, f"{path.name} lacks an `# expect: LINE:COL message` first line"
    return int(m[1]), int(m[2]), m[3].strip()


def test_corpus_is_large_enough() -> None:
    assert len(FILES) >= 30


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_error_position(path: Path) -> None:
    line, col, message = expectation(path)
    rf, problems = check_path(path)
    errors = [p for p in problems if p.severity == "error"]
    assert rf is None and errors
    first = errors[0]
    assert (first.line, first.col) == (line, col), first.format()
    assert message in first.message, first.format()
    assert first.path is not None and Path(first.path).name == path.name
    text = first.format()
    assert text.startswith(f"{first.path}:{line}:{col}: error: ")
    if first.source_line is not None:  # the caret sits under the reported column
        caret_line = text.split("\n")[2]
        assert caret_line.index("^") == 4 + col - 1


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_cli_exits_1(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert ": error: " in out.err


def test_cli_subprocess_on_whole_corpus() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rulelang.cli", "check", *map(str, FILES)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.count(": error: ") >= len(FILES)
