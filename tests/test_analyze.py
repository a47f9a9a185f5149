"""`rulelang.analyze` and `rulelang analyze`: the report's schema, table and figures; failures in a row; bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import rulelang
from rulelang.analysis.analyze import AnalyzeError, select_images
from rulelang.analysis.report import COLUMNS, Report, RuleReport
from rulelang.cli import main

PNG = b"\x89PNG\r\n\x1a\n"

DENSE_ONLY = """\
rulelang: 1
name: dense-only
summary: a rule file with no rule for convolutions, so compiling it on a CNN fails
init: target
final: R
rules:
  - match: dense | relu | reshape | dropout | maxpool
    relevance: vjp(R)
"""


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    bad = out / "dense-only.yaml"
    bad.write_text(DENSE_ONLY)
    report = rulelang.analyze(
        "digits-cnn",
        ["lrp-zplus", "gradient", str(bad)],
        n=3,
        seed=1,
        progress=False,
        out=out,
        theory_n=1,
        heatmap_images=2,
    )
    return report, out


def test_report_json_schema(analysed):
    report, out = analysed
    doc = json.loads((out / "report.json").read_text())
    assert doc == json.loads(json.dumps(report.to_dict()))
    meta = doc["meta"]
    for key in ("versions", "model", "data", "n", "seed", "device", "seconds", "seconds_total", "checks"):
        assert key in meta, key
    assert meta["model"] == "digits-cnn" and meta["n"] == 3 and meta["seed"] == 1 and meta["device"] == "cpu"
    assert {"rulelang", "torch", "python"} <= set(meta["versions"])
    assert {"static", "theory", "csc", "sanity"} <= set(meta["seconds"])
    assert list(doc["rules"]) == ["lrp-zplus", "gradient", "dense-only"]
    zplus = doc["rules"]["lrp-zplus"]
    assert zplus["static"]["verdict"] == "nonnegative-chain" and zplus["static"]["nodes"]
    assert doc["rules"]["gradient"]["static"]["verdict"] == "mixed"
    assert zplus["theory"]["chain"]
    readouts = zplus["csc"]["injections"]["output"]["readouts"]
    assert readouts[-1]["node"] == "input" and readouts[-1]["channels"] == 3
    for r in readouts:
        assert {"node", "channels", "median", "percentiles", "baseline", "whole_map"} <= set(r)
    rl = zplus["sanity"]["random_logit"]
    assert 0 <= rl["ssim_median"] <= 1 and len(rl["ssim_interval"]) == 2
    steps = zplus["sanity"]["randomization"]["steps"]
    assert steps and {"layer", "ssim_median", "spearman_median"} <= set(steps[0])
    assert steps[0]["layer"] == "classifier_5"  # top layer first
    for rule in ("lrp-zplus", "gradient"):
        assert set(doc["rules"][rule]["seconds"]) >= {"compile", "static", "theory", "csc", "sanity"}


def test_failing_rule_is_reported_in_its_row(analysed):
    report, out = analysed
    bad = report["dense-only"]
    assert "compile" in bad.errors and bad.conclusion() == "error"
    assert bad.static is None and bad.csc is None
    row = report.table().splitlines()[-1]
    assert row.startswith("| dense-only | error |") and row.rstrip().endswith("| error |")
    md = (out / "report.md").read_text()
    assert "## Errors" in md and "dense-only" in md
    # the other rules were analysed all the same
    assert report["lrp-zplus"].errors == {} and report["gradient"].errors == {}


def test_table_rows_and_conclusions(analysed):
    report, out = analysed
    md = (out / "report.md").read_text()
    header = "| " + " | ".join(h for _, h in COLUMNS) + " |"
    assert header in md
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 3  # header + one row per rule
    zplus = report["lrp-zplus"].row()
    assert zplus["static"] == "nonnegative-chain" and "(features_0)" in zplus["csc_layer"]
    # the columns are the report's numbers
    low = report["gradient"].csc_lowest_layer()
    assert low["node"] == "features_0" and low["channels"] == 16
    assert report["gradient"].row()["csc_layer"].startswith(f"{low['median']:.3f}")
    assert report["lrp-zplus"].conclusion() == "collapses"  # z+ converges at conv1 (paper §2.3)
    text = report.table("text")
    assert text.splitlines()[0].split()[0] == "rule" and len(text.splitlines()) == 2 + 3


def test_figures_are_pngs_and_linked(analysed):
    report, out = analysed
    names = {Path(p).name for p in report.figures.values()}
    assert {"csc-output.png", "heatmaps.png", "randomization.png", "random-logit.png"} <= names
    assert any(n.startswith("randomization-lrp-zplus") for n in names)
    md = (out / "report.md").read_text()
    for rel in report.figures.values():
        path = out / rel
        assert path.read_bytes()[:8] == PNG, rel
        assert f"({rel})" in md
    for link in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (out / link).is_file()


def test_conclusion_words():
    def csc(low: float, whole: float) -> dict:
        reads = [
            {"node": "fc", "channels": 10, "median": 0.1, "whole_map": 0.1},
            {"node": "conv1", "channels": 16, "median": low, "whole_map": low},
            {"node": "input", "channels": 3, "median": 0.6, "whole_map": whole},
        ]
        return {"injections": {"output": {"readouts": reads}}}

    def sanity(rl: float, top: float) -> dict:
        return {"random_logit": {"ssim_median": rl}, "randomization": {"steps": [{"layer": "fc", "ssim_median": top}]}}

    assert RuleReport("a", csc=csc(0.9999, 0.5), sanity=sanity(0.3, 0.3)).conclusion() == "collapses"
    assert RuleReport("b", csc=csc(0.5, 0.5), sanity=sanity(0.95, 0.3)).conclusion() == "insensitive"
    assert RuleReport("c", csc=csc(0.5, 0.5), sanity=sanity(0.3, 0.4)).conclusion() == "sensitive"
    assert RuleReport("d", errors={"compile": "boom"}).conclusion() == "error"
    assert RuleReport("e", static={"verdict": "nonnegative-chain"}).conclusion() == "collapses"
    assert RuleReport("f", static={"verdict": "mixed"}).conclusion() == "unknown"
    row = RuleReport("g", csc=csc(1 - 4e-5, 0.5), errors={"sanity": "x"}).row()
    assert row["csc_layer"] == "1-4e-05 (conv1)" and row["random_logit"] == "error" and row["theory_csc"] == "–"
    assert row["chain_ratio"] == "–" and row["interlayer"] == "–"
    theory = {
        "chain": [{"node": "fc", "sigma_ratio": 1.0}, {"node": "input", "sigma_ratio": 4.5e-6}],
        "interlayer": {"product": 808.3, "computed": 5, "pairs": 15},
    }
    row = RuleReport("h", theory=theory).row()
    assert row["chain_ratio"] == "4.5e-06" and row["interlayer"] == "808 (5/15)"
    assert (
        RuleReport("i", theory={**theory, "interlayer": {"product": 2.0, "computed": 0, "pairs": 7}}).row()[
            "interlayer"
        ]
        == "–"
    )


def test_select_images_is_seeded_and_keeps_the_first():
    x = torch.arange(20.0)[:, None]
    a = select_images(x, None, 5, seed=0)[2]
    assert a[0] == 0 and len(set(a)) == 5 and a == select_images(x, None, 5, seed=0)[2]
    assert a != select_images(x, None, 5, seed=1)[2]
    assert select_images(x, None, None, seed=0)[2] == list(range(20))


def test_analyze_bad_arguments():
    with pytest.raises(AnalyzeError, match="unknown check"):
        rulelang.analyze("digits-cnn", ["gradient"], checks="static,csv")
    with pytest.raises(AnalyzeError, match="unknown rule 'lrp-zplu'.*lrp-zplus"):
        rulelang.analyze("digits-cnn", ["lrp-zplu"])
    with pytest.raises(AnalyzeError, match="unknown node 'features_99'"):
        rulelang.analyze("digits-cnn", ["gradient"], checks="csc", at="features_99", n=2)
    with pytest.raises(AnalyzeError, match="unknown option"):
        rulelang.analyze("digits-cnn", ["gradient"], probs=3)


def test_report_of_a_module_with_tensor_data():
    model = rulelang.builtin_model("digits-cnn")
    x, y = rulelang.builtin_data("digits-rgb", "test")
    report = rulelang.analyze(model, "lrp-epsilon", (x[:6], y[:6]), checks=["static"], n=None, progress=False)
    assert isinstance(report, Report) and report.meta["n"] == 6 and report.meta["model"] == "DigitsCNN"
    assert report["lrp-epsilon"].static["verdict"] == "mixed"
    assert report["lrp-epsilon"].conclusion() == "unknown"
    json.dumps(report.to_dict(), allow_nan=False)


# ------------------------------------------------------------------------------------------------------ CLI
def test_cli_writes_the_report_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(["analyze", "lrp-zplus", "gradient", "--checks", "static", "-n", "2", "-o", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"wrote {out / 'report.json'}" in printed
    assert re.search(r"^lrp-zplus\s+nonnegative-chain", printed, re.M)
    assert re.search(r"^gradient\s+mixed", printed, re.M)
    doc = json.loads((out / "report.json").read_text())
    assert doc["meta"]["checks"] == ["static"] and doc["rules"]["gradient"]["csc"] is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["lrp-zplu"], "unknown rule 'lrp-zplu': did you mean `lrp-zplus`?"),
        (["--model", "resnet5O"], "unknown model 'resnet5O'; did you mean 'resnet50'?"),
        (["--weights", "nope.pt"], "weights file not found: nope.pt"),
        (["gradient", "--checks", "csc", "--at", "features_99"], "unknown node 'features_99'"),
        (["--images", "no/such/folder"], "image folder not found: no/such/folder"),
        (["gradient", "-n", "0"], "-n must be at least 1"),
        (["--checks", "static,csv"], "unknown check(s) csv"),
        (["my-rule.yaml"], "rule file not found: my-rule.yaml"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--data", "digits"], "--data digits does not fit digits-cnn"),
    ],
)
def test_cli_one_line_errors(argv, message, tmp_path, capsys):
    assert main(["analyze", *argv, "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_cli_torchvision_model_with_user_weights_and_images(tmp_path, capsys):
    import skimage.io

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    skimage.io.imsave(photos / "a.png", (rng.random((40, 60, 3)) * 255).astype(np.uint8))
    skimage.io.imsave(photos / "b.jpg", (rng.random((50, 30, 3)) * 255).astype(np.uint8))
    (photos / "notes.txt").write_text("not a picture")
    weights = tmp_path / "my.pth"
    torch.save(rulelang.builtin_model("resnet18", num_classes=1000).state_dict(), weights)
    out = tmp_path / "rep"
    argv = ["analyze", "lrp-zplus", "--model", "resnet18", "--weights", str(weights), "--images", str(photos)]
    assert main([*argv, "--checks", "static", "-o", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["meta"]["model"] == "resnet18" and doc["meta"]["n"] == 2
    assert "2 pictures from" in doc["meta"]["data"]
    assert doc["rules"]["lrp-zplus"]["static"]["verdict"] in ("nonnegative-chain", "mixed")
    # a weights file for another architecture: one line
    capsys.readouterr()
    bad = tmp_path / "cnn.pt"
    torch.save(rulelang.builtin_model("digits-cnn").state_dict(), bad)
    assert main(["analyze", "--model", "resnet18", "--weights", str(bad), "--images", str(photos), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "does not fit resnet18: missing keys" in err and err.count("\n") == 1


def test_resize_crop_keeps_the_centre():
    from rulelang.data.inputs import resize_crop

    img = np.zeros((100, 200, 3))
    img[:, 50:150] = 1.0  # a centred square, 100×100
    out = resize_crop(img, (50, 50))
    assert out.shape == (50, 50, 3) and out.min() > 0.9  # the crop is the square


# --------------------------------------------------------------------------------------------------- Quantus
def test_quantus_explain_follows_the_explain_func_protocol():
    model = rulelang.builtin_model("digits-cnn")
    x, y = rulelang.builtin_data("digits-rgb", "test")
    x, y = x[:3], y[:3]
    # Quantus calls explain_func(model=..., inputs=<numpy N×C×H×W>, targets=<numpy ints>, **explain_func_kwargs)
    a = rulelang.quantus_explain(model=model, inputs=x.numpy(), targets=y.numpy(), rule="lrp-epsilon", eps=0.1)
    assert isinstance(a, np.ndarray) and a.shape == tuple(x.shape)
    expected = rulelang.compile(model, "lrp-epsilon", example_input=x[:1], eps=0.1)(x, y)
    np.testing.assert_allclose(a, expected.numpy(), rtol=1e-5, atol=1e-7)
    last = rulelang.quantus_explain(model, x.permute(0, 2, 3, 1).numpy(), 4, rule="gradient", channel_first=False)
    assert last.shape == (3, 32, 32, 3)
    # weights re-initialised in place (as Quantus's MPRT does on its copy) are seen by the next call
    model.train()
    before = rulelang.quantus_explain(model, x.numpy(), y.numpy(), rule="gradient")
    assert model.training  # the caller's mode is restored
    with torch.no_grad():
        model.classifier[-1].weight.normal_()
    after = rulelang.quantus_explain(model, x.numpy(), y.numpy(), rule="gradient")
    assert not np.allclose(before, after)
    with pytest.raises(rulelang.RulelangError, match="3 inputs but 2 targets"):
        rulelang.quantus_explain(model, x.numpy(), [1, 2], rule="gradient")
