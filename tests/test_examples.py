"""The examples run (the quickstart end to end on the built-in model)."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs(capsys) -> None:
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "lrp-epsilon-plus" in out and "_lrp.yaml:" in out and "digits-cnn test accuracy 0.9" in out
