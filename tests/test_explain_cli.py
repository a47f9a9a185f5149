"""`rulelang explain`: the grid drawing (real attributions: input gradients of the built-in model), input
loading, the full command (needs the compiler) and its one-line errors."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rulelang.cli import main
from rulelang.data import builtin_data
from rulelang.data.inputs import load_image, prepare_inputs
from rulelang.models import builtin_model, model_info
from rulelang.viz.grid import draw_grid, grid_pixel_size

ROOT = Path(__file__).resolve().parents[1]


def _has_compiler() -> bool:
    if importlib.util.find_spec("rulelang.compiler.explainer") is None:
        return False
    try:
        from rulelang import compile  # noqa: F401
    except Exception:
        return False
    return True


needs_compiler = pytest.mark.skipif(not _has_compiler(), reason="rulelang.compiler.explainer not available yet")


def _png_size(path):
    import matplotlib.image

    img = matplotlib.image.imread(str(path))
    return img.shape[1], img.shape[0], img


def _gradients(model, x):
    x = x.clone().requires_grad_(True)
    logits = model(x)
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    return x.grad.detach()


def test_draw_grid_with_real_gradients(tmp_path):
    x, y = builtin_data("digits-rgb", "test")
    x = x[:3]
    model = builtin_model("digits-cnn")
    grad = _gradients(model, x)
    atts = {"gradient": grad, "gradient*input": grad * x}
    out = tmp_path / "grid.png"
    w, h = draw_grid(x, atts, out, titles=["a", "b", "c"], cell=64)
    assert (w, h) == grid_pixel_size(2, 3, cell=64)
    pw, ph, img = _png_size(out)
    assert (pw, ph) == (w, h)
    # rows are distinguishable: the heatmap rows contain red and blue, the input row does not look like them
    assert img[..., :3].std() > 0.1
    with pytest.raises(Exception, match="attributions for"):
        draw_grid(x, {"gradient": grad[:2]}, tmp_path / "bad.png")


def test_grid_size_grows_with_rules_and_images():
    w1, h1 = grid_pixel_size(1, 1)
    w2, h2 = grid_pixel_size(3, 4)
    assert w2 - w1 == 3 * 128 and h2 - h1 == 2 * 128


def test_load_image_resizes_and_scales(tmp_path):
    import skimage.io

    rgba = np.zeros((50, 70, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    p = tmp_path / "red.png"
    skimage.io.imsave(str(p), rgba, check_contrast=False)
    t = load_image(p, (32, 32))
    assert t.shape == (3, 32, 32) and t.dtype == torch.float32
    assert torch.allclose(t[0], torch.ones(32, 32), atol=1e-4) and t[1:].abs().max() < 1e-4
    grey = tmp_path / "grey.png"
    skimage.io.imsave(str(grey), np.full((10, 10), 128, np.uint8), check_contrast=False)
    g = load_image(grey, (224, 224))
    assert g.shape == (3, 224, 224) and abs(g.mean().item() - 128 / 255) < 1e-3


def test_prepare_inputs():
    x, disp, names, labels = prepare_inputs(model_info("digits-resnet"), None, "digits", 5)
    assert x.shape == (5, 3, 32, 32) and labels.tolist() == builtin_data("digits-rgb", "test")[1][:5].tolist()
    x, disp, names, labels = prepare_inputs(model_info("vgg16"), None, "samples", 2)
    assert x.shape == (2, 3, 224, 224) and names == ["astronaut", "coffee"] and labels is None
    assert x.min() < -0.5 and 0 <= disp.min() and disp.max() <= 1  # normalised vs. display


def _run_cli(argv, capsys):
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _assert_one_line_error(rc, err, pattern):
    assert rc == 1
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert pattern in lines[0], err


# ---------------------------------------------------------------- errors raised before any rule is compiled


def test_missing_image_file(tmp_path, capsys):
    rc, _, err = _run_cli(
        ["explain", "gradient", "--image", str(tmp_path / "none.png"), "-o", str(tmp_path / "o.png")], capsys
    )
    _assert_one_line_error(rc, err, "image file not found")


def test_unknown_model(tmp_path, capsys):
    rc, _, err = _run_cli(
        ["explain", "gradient", "--model", "digits-cnm", "--data", "digits", "-o", str(tmp_path / "o.png")], capsys
    )
    _assert_one_line_error(rc, err, "did you mean 'digits-cnn'")


def test_target_out_of_range(tmp_path, capsys):
    rc, _, err = _run_cli(
        ["explain", "gradient", "--data", "digits", "--target", "10", "-o", str(tmp_path / "o.png")], capsys
    )
    _assert_one_line_error(rc, err, "target 10 is out of range")


def test_missing_weights_and_rule_file(tmp_path, capsys):
    rc, _, err = _run_cli(
        [
            "explain",
            "gradient",
            "--model",
            "vgg11",
            "--weights",
            str(tmp_path / "w.pth"),
            "--data",
            "samples",
            "-o",
            str(tmp_path / "o.png"),
        ],
        capsys,
    )
    _assert_one_line_error(rc, err, "weights file not found")
    rc, _, err = _run_cli(
        ["explain", str(tmp_path / "nope.yaml"), "--data", "digits", "-o", str(tmp_path / "o.png")], capsys
    )
    _assert_one_line_error(rc, err, "rule file not found")


def test_digits_data_needs_digits_model(tmp_path, capsys):
    rc, _, err = _run_cli(
        ["explain", "gradient", "--model", "resnet18", "--data", "digits", "-o", str(tmp_path / "o.png")], capsys
    )
    _assert_one_line_error(rc, err, "needs a digits model")


# ---------------------------------------------------------------- the full command (needs the compiler)


@needs_compiler
def test_explain_grid_three_rules(tmp_path, capsys):
    out = tmp_path / "grid.png"
    rc, stdout, err = _run_cli(
        [
            "explain",
            "gradient",
            "lrp-zplus",
            "guided-backprop",
            "--model",
            "digits-cnn",
            "--data",
            "digits",
            "-n",
            "4",
            "-o",
            str(out),
        ],
        capsys,
    )
    assert rc == 0, err
    assert out.is_file() and "wrote" in stdout
    w, h, img = _png_size(out)
    assert (w, h) == grid_pixel_size(3, 4)
    assert img[..., :3].std() > 0.05


@needs_compiler
def test_explain_resnet_with_target(tmp_path, capsys):
    out = tmp_path / "r.png"
    rc, _, err = _run_cli(
        [
            "explain",
            "gradient",
            "--model",
            "digits-resnet",
            "--data",
            "digits",
            "-n",
            "2",
            "--target",
            "3",
            "--cell",
            "64",
            "-o",
            str(out),
        ],
        capsys,
    )
    assert rc == 0, err
    assert _png_size(out)[:2] == grid_pixel_size(1, 2, cell=64)


@needs_compiler
def test_unknown_rule_is_one_line(tmp_path, capsys):
    rc, _, err = _run_cli(
        ["explain", "lrp-zplsu", "--data", "digits", "-n", "1", "-o", str(tmp_path / "o.png")], capsys
    )
    assert rc == 1 and "Traceback" not in err and err.strip()
    assert not (tmp_path / "o.png").exists()


def test_cli_subprocess_error_has_no_traceback(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "rulelang.cli",
            "explain",
            "gradient",
            "--data",
            "digits",
            "--target",
            "-1",
            "-o",
            str(tmp_path / "o.png"),
        ],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["target -1 is out of range: digits-cnn has 10 classes (0..9)"]


# ---------------------------------------------------------------- bad inputs, table-driven (issue 12)
NAN_RULE = "rulelang: 1\nsummary: divides by zero\ninit: target\nfinal: R / (x - x)\ndefault: vjp(R)\n"

BAD = [
    # (id, argv after `explain` with {tmp} for the test folder, expected message part)
    ("missing output folder", ["gradient", "--data", "digits", "-o", "{tmp}/no/such/dir/o.png"], "does not exist"),
    (
        "--mkdir makes one level only",
        ["gradient", "--data", "digits", "--mkdir", "-o", "{tmp}/no/such/o.png"],
        "cannot be created: its parent",
    ),
    ("output is not a png", ["gradient", "--data", "digits", "-o", "{tmp}/o.jpg"], "must be a .png"),
    (
        "library rule given as a file name",
        ["gradient.yaml", "--data", "digits", "-o", "{tmp}/o.png"],
        "did you mean the library rule `gradient`?",
    ),
    ("non-finite attribution", ["{tmp}/nan.yaml", "--data", "digits", "-n", "2", "-o", "{tmp}/o.png"], "non-finite"),
]


@pytest.mark.parametrize("argv, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    (tmp_path / "nan.yaml").write_text(NAN_RULE)
    before = sorted(tmp_path.rglob("*"))
    rc, _, err = _run_cli(["explain", *[a.format(tmp=tmp_path) for a in argv]], capsys)
    _assert_one_line_error(rc, err, message)
    assert sorted(tmp_path.rglob("*")) == before  # no PNG, no folder


def test_mkdir_creates_the_last_level(tmp_path):
    from rulelang.commands.explain import check_output
    from rulelang.errors import UsageError

    check_output(tmp_path / "here.png")  # the folder exists: nothing to do
    with pytest.raises(UsageError, match="does not exist"):
        check_output(tmp_path / "new" / "o.png")
    check_output(tmp_path / "new" / "o.png", mkdir=True)  # checked, not yet created
    assert not (tmp_path / "new").exists()
    check_output(tmp_path / "new" / "o.png", mkdir=True, create=True)
    assert (tmp_path / "new").is_dir()
    with pytest.raises(UsageError, match="its parent"):
        check_output(tmp_path / "a" / "b" / "o.png", mkdir=True, create=True)
    assert not (tmp_path / "a").exists()


def test_draw_grid_refuses_non_finite_maps(tmp_path):
    """NaN would be drawn as white (zero): a grid with a non-finite map is an error naming the rule and image."""
    x = torch.rand(2, 3, 8, 8)
    att = torch.randn(2, 3, 8, 8)
    att[1, 0, 2, 2] = float("nan")
    with pytest.raises(Exception, match=r"lrp-x: the attribution of image\(s\) 1 has non-finite values \(NaN"):
        draw_grid(x, {"lrp-x": att}, tmp_path / "g.png")
    att[1, 0, 2, 2] = float("inf")
    with pytest.raises(Exception, match="non-finite"):
        draw_grid(x, {"lrp-x": att}, tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()
    with pytest.raises(Exception, match="output folder .* does not exist"):
        draw_grid(x, {"ok": torch.randn(2, 3, 8, 8)}, tmp_path / "missing" / "g.png")
