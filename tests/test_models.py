"""Built-in models: committed weights reach >= 97 % on the digits test split; torchvision models and weight errors."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import rulelang
from rulelang.data import builtin_data
from rulelang.errors import ModelError
from rulelang.models import BUILTIN_MODELS, builtin_model, load_weights, model_info, weights_path


@pytest.fixture(scope="module")
def rgb_test():
    return builtin_data("digits-rgb", "test")


@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet", "digits-vgg16"])
def test_committed_weights_accuracy(name, rgb_test):
    x, y = rgb_test
    model = rulelang.builtin_model(name)
    assert not model.training
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.97, f"{name}: test accuracy {acc:.4f}"
    # the weights matter: a freshly initialised model of the same architecture is at chance
    fresh = BUILTIN_MODELS[name][0]().eval()
    with torch.no_grad():
        assert (fresh(x).argmax(1) == y).float().mean().item() < 0.5
    assert weights_path(name).stat().st_size < 5_000_000


def test_architectures_are_traceable_and_as_described():
    cnn = builtin_model("digits-cnn")
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    dense = [m for m in cnn.modules() if isinstance(m, torch.nn.Linear)]
    pools = [m for m in cnn.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(convs) >= 4 and len(dense) == 2 and len(pools) >= 2
    res = builtin_model("digits-resnet")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in res.modules())
    for model in (cnn, res):
        gm = torch.fx.symbolic_trace(model)
        x = torch.rand(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.allclose(gm(x), model(x), atol=1e-5)
    # the ResNet's skips are functional adds and its ReLUs functional
    graph = torch.fx.symbolic_trace(res).graph
    import operator

    adds = [n for n in graph.nodes if n.op == "call_function" and n.target in (operator.add, torch.add)]
    relus = [n for n in graph.nodes if n.op == "call_function" and n.target is F.relu]
    assert len(adds) >= 3 and len(relus) >= 6
    info = model_info("digits-resnet")
    assert info.input_shape == (3, 32, 32) and info.num_classes == 10 and info.data == "digits-rgb"


def test_digits_vgg16_has_vgg16s_layout():
    vgg = builtin_model("digits-vgg16")
    kinds = [type(m).__name__ for m in vgg.modules() if not isinstance(m, torch.nn.Sequential)][1:]
    assert kinds.count("Conv2d") == 13 and kinds.count("Linear") == 3 and kinds.count("MaxPool2d") == 5
    assert not any("BatchNorm" in k for k in kinds)
    convs = [m for m in vgg.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(torch.fx.symbolic_trace(vgg)(x), vgg(x), atol=1e-5)


def test_fresh_model_each_call():
    a, b = builtin_model("digits-cnn"), builtin_model("digits-cnn")
    assert a is not b
    next(a.parameters()).data.zero_()
    assert next(b.parameters()).abs().sum() > 0


def test_torchvision_models_random_and_with_weights(tmp_path):
    m = builtin_model("resnet18", num_classes=7)
    assert not m.training and m.fc.out_features == 7
    assert model_info("vgg16").input_shape == (3, 224, 224)
    # a state_dict file round-trips (also float16 and wrapped in {"state_dict": ...})
    sd = {k: v.half() if v.is_floating_point() else v for k, v in m.state_dict().items()}
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": sd}, path)
    m2 = builtin_model("resnet18", weights=path, num_classes=7)
    assert torch.allclose(m2.fc.weight, m.fc.weight.half().float())
    assert m2.fc.weight.dtype == torch.float32


def test_bad_weights_errors(tmp_path):
    with pytest.raises(ModelError, match="weights file not found"):
        builtin_model("resnet18", weights=tmp_path / "nope.pt")
    # a file for another architecture: key mismatch, one line
    other = tmp_path / "cnn.pt"
    torch.save(builtin_model("digits-cnn").state_dict(), other)
    with pytest.raises(ModelError, match="does not fit digits-resnet: missing keys") as e:
        builtin_model("digits-resnet", weights=other)
    assert "\n" not in str(e.value)
    # right keys, wrong shapes
    sd = builtin_model("resnet18").state_dict()
    sd["fc.weight"] = torch.zeros(5, 512)
    sd["fc.bias"] = torch.zeros(5)
    bad = tmp_path / "r18.pt"
    torch.save(sd, bad)
    with pytest.raises(ModelError, match=r"fc.weight has shape \[5, 512\] in the file but \[1000, 512\]"):
        builtin_model("resnet18", weights=bad)
    # not a torch file
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    with pytest.raises(ModelError, match="is a text file, not a state_dict") as e:
        builtin_model("digits-cnn", weights=junk)
    assert "weights_only" not in str(e.value)
    with pytest.raises(ModelError, match="state_dict"):
        torch.save([1, 2, 3], junk)
        load_weights(BUILTIN_MODELS["digits-cnn"][0](), junk)


def test_unknown_model_did_you_mean():
    with pytest.raises(ModelError, match="did you mean 'resnet50'"):
        builtin_model("resnet5O")
    with pytest.raises(ModelError, match="did you mean 'digits-cnn'"):
        builtin_model("digit-cnn")
    with pytest.raises(ModelError, match="unknown model 'zzz'"):
        model_info("zzz")


def test_training_script_help():
    out = subprocess.run(
        [sys.executable, "examples/train_builtin_models.py", "--help"],
        capture_output=True,
        text=True,
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]),
    )
    assert out.returncode == 0 and "--epochs" in out.stdout


def test_weights_file_kinds_say_what_they_are(tmp_path):
    """A text file, an empty file and a pickle of Python objects each get their own one-line error, never
    torch's advice to switch `weights_only` off (which would run code from the file)."""
    import pickle

    (tmp_path / "notes.pth").write_text("conv1.weight: [0.1, 0.2]\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    with open(tmp_path / "objects.pt", "wb") as f:
        pickle.dump({"conv": ModelError("not a tensor")}, f, protocol=2)
    for name, message in [
        ("notes.pth", "is a text file"),
        ("empty.pt", "is an empty file"),
        ("objects.pt", "holds Python objects other than tensors"),
    ]:
        with pytest.raises(ModelError, match=message) as e:
            builtin_model("digits-cnn", weights=tmp_path / name)
        assert "weights_only" not in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet"])
def test_builtin_model_knows_its_data_set(name):
    """Fed the grey digits (1 channel), a built-in digits model names the data set it expects instead of dying in
    a raw convolution error; its own data set runs."""
    model = builtin_model(name)
    assert model.rulelang_data == "digits-rgb" and model.rulelang_input_shape == (3, 32, 32)
    grey, _ = builtin_data("digits")
    with pytest.raises(ModelError, match=f"{name} expects digits-rgb") as e:
        model(grey[:2])
    assert "builtin_data('digits-rgb')" in str(e.value) and "grey variant" in str(e.value)
    with pytest.raises(ModelError, match="got 2×3×16×16"):
        model(torch.zeros(2, 3, 16, 16))
    rgb, _ = builtin_data("digits-rgb")
    assert model(rgb[:2]).shape == (2, 10)
    # the check is invisible to a symbolic trace (the traced graph is the network alone)
    gm = torch.fx.symbolic_trace(model)
    assert not any("check_input" in str(n.target) for n in gm.graph.nodes)
