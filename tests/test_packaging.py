"""A non-editable install ships the grammar, the rule library and the built-in weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_installed_package_finds_rules_and_weights(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    probe = (
        "import rulelang, rulelang.lang.library as L; "
        "p = L.find_rule('lrp-zplus'); assert '_rules' in str(p), p; "
        "assert len(L.list_rules()) >= 3; rulelang.load('lrp-epsilon'); "
        "import torch; m = rulelang.builtin_model('digits-cnn'); x = torch.rand(1, 3, 32, 32); "
        "a = rulelang.compile(m, 'lrp-zplus', example_input=x)(x); rulelang.heatmap(a[0]); "
        "import rulelang.analysis; rulelang.analysis.static; "
        "print(rulelang.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(target)}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert str(target) in out.stdout
    assert (target / "rulelang" / "models" / "weights" / "digits-cnn.pt").exists()
    assert (target / "rulelang" / "lang" / "grammar.lark").exists()
    assert (target / "rulelang" / "py.typed").exists()


def test_every_subpackage_is_packaged() -> None:
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "rulelang").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject's packages: {sorted(found - listed)}"
