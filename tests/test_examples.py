"""The examples run (the quickstart end to end on the built-in model)."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs(capsys) -> None:
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "lrp-epsilon-plus" in out and "_lrp.yaml:" in out and "digits-cnn test accuracy 0.9" in out


def _run(name: str, *argv: str):
    """Run an example's main(argv) in fast mode and return what it returns."""
    ns = runpy.run_path(str(EXAMPLES / name), run_name="example")
    return ns["main"](list(argv))


def test_reproduce_paper_fast(tmp_path, capsys) -> None:
    reports = _run("reproduce_paper.py", "--fast", "-o", str(tmp_path))
    out = capsys.readouterr().out
    assert set(reports) == {"digits-cnn", "digits-vgg16"}
    assert (tmp_path / "csc-depth.png").read_bytes()[:4] == b"\x89PNG"
    for model in reports:
        assert (tmp_path / model / "report.json").is_file() and (
            tmp_path / model / "figures" / "csc-output.png"
        ).is_file()
    # z+ (alpha1-beta0) converges on both networks: Theorem 1 (paper §2.3)
    for rep in reports.values():
        assert rep["lrp-alpha1-beta0"].csc_lowest_layer()["median"] >= 0.99
    # the deeper VGG-16 layout has more readout layers than digits-cnn
    assert len(reports["digits-vgg16"]["gradient"].csc_readouts()) > len(
        reports["digits-cnn"]["gradient"].csc_readouts()
    )
    assert "paper converges" in out and "digits-vgg16:" in out


def test_write_a_rule_fast(capsys) -> None:
    results = _run("write_a_rule.py", "--fast")
    out = capsys.readouterr().out
    assert "leaky-zplus.yaml: ok" in out
    # leak = 0 is z+: every map non-negative, proved; leak > 0 breaks the proof at the rule's line
    assert results["static leak=0.0"] == "nonnegative-chain" and results["static leak=0.1"] == "mixed"
    assert "leaky-zplus.yaml:14" in out
    assert results["csc leaky-zplus-0"] >= 0.99


def test_quantus_checks_fast(capsys) -> None:
    results = _run("quantus_checks.py", "--fast")
    assert 0 <= results["RandomLogit gradient"] <= 1 and 0 <= results["RandomLogit lrp-zplus"] <= 1
    curve = results["MPRT excitation-bp"]
    assert list(curve)[0] == "original" and "classifier.5" in curve and "features.0" in curve
    assert "Quantus MPRT" in capsys.readouterr().out


def test_make_readme_figures_from_reports(tmp_path, capsys) -> None:
    import rulelang

    for model in ("digits-cnn", "digits-vgg16"):
        rulelang.analyze(model, ["gradient", "lrp-alpha1-beta0"], n=2, checks="csc", out=tmp_path / model)
    a, b = str(tmp_path / "digits-cnn"), str(tmp_path / "digits-vgg16")
    written = _run("make_readme_figures.py", "--from", a, "--depth-from", a, b, "-o", str(tmp_path / "docs"))
    assert [p.name for p in written] == ["csc.png", "csc-depth.png"]
    for p in written:
        assert p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size < 300_000
    assert "csc-depth.png" in capsys.readouterr().out
