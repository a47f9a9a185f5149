"""The sanity checks (rulelang.analysis.random_logit / randomization), scored as research/paper.md §4."""

import json

import numpy as np
import pytest
import torch

import rulelang
from rulelang.analysis import random_logit, randomization
from rulelang.analysis.sanity import normalize_sanity, percentile_for, reduction_for, ssim_flip
from rulelang.analysis.stats import AnalysisError

CONVERGING = ["lrp-zplus", "lrp-alpha1-beta0", "excitation-bp", "dtd-bounded"]


@pytest.fixture(scope="module")
def data():
    x, y = rulelang.builtin_data("digits-rgb", split="test")
    return x[:16], y[:16]


@pytest.fixture(scope="module")
def cnn():
    return rulelang.builtin_model("digits-cnn")


def test_reduction_and_percentile_come_from_the_rule_file():
    red = {n: reduction_for(rulelang.load(n)) for n in ("gradient", "guided-backprop", "rectgrad", "deconvnet")}
    assert set(red.values()) == {"abs-max"}
    for name in ("lrp-zplus", "dtd-bounded", "deeplift-rescale", "excitation-bp", "pattern-attribution"):
        assert reduction_for(rulelang.load(name)) == "sum", name  # excitation-bp/deeplift: init target, not gradient
    assert percentile_for(rulelang.load("rectgrad")) == 100 and percentile_for(rulelang.load("gradient")) == 99.5


def test_scoring_helpers():
    a = np.arange(100, dtype=float).reshape(10, 10)
    n = normalize_sanity(a, 99.5)
    assert n[0, 0] == 1 and n[-1, -1] == 0  # the paper's inverted polarity, robust to 0.5 % outliers
    assert np.all(normalize_sanity(np.ones((8, 8))) == 0)
    rng = np.random.default_rng(0)
    m = rng.standard_normal((16, 16))
    assert ssim_flip(m, m) == pytest.approx(1.0)
    assert ssim_flip(m, -m) == pytest.approx(1.0)  # a sign flip is not a change
    assert ssim_flip(m, rng.standard_normal((16, 16))) < 0.5


@pytest.mark.parametrize("rule", CONVERGING + ["gradient", "deeplift-rescale"])
def test_random_logit_on_digits_cnn(cnn, data, rule):
    x, y = data
    res = random_logit(rulelang.compile(cnn, rule, example_input=x[:1]), x, y, seed=0)
    d = res.to_dict()
    assert d["n"] == 16 and d["ssim_interval"][0] <= d["ssim_median"] <= d["ssim_interval"][1]
    assert np.all(res.random_targets != y.numpy())
    if rule in CONVERGING:
        assert d["ssim_median"] >= 0.9, str(res)
    else:  # measured (50 images): 0.41 (gradient), 0.52 (deeplift-rescale)
        assert d["ssim_median"] < 0.75, str(res)


@pytest.mark.parametrize("rule", ["lrp-zplus", "gradient"])
def test_random_logit_on_digits_resnet(data, rule):
    x, y = data
    model = rulelang.builtin_model("digits-resnet")
    res = random_logit(rulelang.compile(model, rule, example_input=x[:1]), x[:8], y[:8])
    if rule == "gradient":
        assert res.to_dict()["ssim_median"] < 0.75, str(res)
    else:
        assert res.to_dict()["ssim_median"] >= 0.9, str(res)


@pytest.mark.parametrize("rule", CONVERGING + ["gradient", "deeplift-rescale"])
def test_top_layer_randomization_on_digits_cnn(cnn, data, rule):
    x, y = data
    res = randomization(cnn, rule, x, y, layers=["classifier.5"], seed=0)
    step = res.to_dict()["steps"][0]
    assert step["layer"] == "classifier_5"
    if rule in CONVERGING:
        assert step["ssim_median"] >= 0.9, str(res)
    else:  # measured (50 images): 0.31 (gradient), 0.39 (deeplift-rescale)
        assert step["ssim_median"] < 0.6, str(res)


def test_cascading_leaves_the_model_alone_and_is_seeded(data):
    x, y = data
    model = rulelang.builtin_model("digits-resnet").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_state = torch.random.get_rng_state()
    a = randomization(model, "lrp-zplus", x[:3], y[:3], seed=3, examples=2)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules())
    b = randomization(model, "lrp-zplus", x[:3], y[:3], seed=3)
    assert a.to_dict() == b.to_dict()
    d = a.to_dict()
    assert d["mode"] == "cascading" and d["steps"][0]["layer"] == "fc" and d["steps"][-1]["layer"] == "conv1"
    assert len(d["steps"]) == 1 + 2 * 6 + 2 + 1  # fc, two convs per block, two downsample convs, conv1
    assert [name for name, _ in a.examples][:2] == ["original", "fc"]
    assert a.examples[0][1].shape == (2, 3, 32, 32)
    json.dumps(d)
    assert "conv1" in str(a)


def test_independent_mode_restores_the_other_layers(cnn, data):
    x, y = data
    layers = ["classifier_5", "features_0"]
    ind = randomization(cnn, "gradient", x[:6], y[:6], mode="independent", layers=layers)
    cas = randomization(cnn, "gradient", x[:6], y[:6], mode="cascading", layers=layers)
    ci, cc = ind.to_dict()["steps"], cas.to_dict()["steps"]
    assert ci[0] == cc[0]  # the first step is the same in both modes
    assert ci[1]["ssim_median"] != cc[1]["ssim_median"]


def test_bad_input_is_a_clear_error(cnn, data):
    x, y = data
    with pytest.raises(AnalysisError, match="no parametric layer"):
        randomization(cnn, "gradient", x[:2], y[:2], layers=["features_1"])
    with pytest.raises(AnalysisError, match="mode"):
        randomization(cnn, "gradient", x[:2], y[:2], mode="sideways")
    ex = rulelang.compile(cnn, "gradient", example_input=x[:1])
    with pytest.raises(AnalysisError, match="one integer class per image"):
        random_logit(ex, x[:2], y[:3])
    with pytest.raises(AnalysisError, match="reduction"):
        random_logit(ex, x[:2], y[:2], reduce="median")


def test_randomization_accepts_an_explainer_and_keeps_examples(cnn, data):
    x, y = data
    ex = rulelang.compile(cnn, "lrp-zplus", example_input=x[:1])
    a = randomization(cnn, ex, x[:4], y[:4], layers=["classifier_5"], examples=3)
    b = randomization(cnn, "lrp-zplus", x[:4], y[:4], layers=["classifier_5"])
    assert a.to_dict()["steps"] == b.to_dict()["steps"]
    assert [n for n, _ in a.examples] == ["original", "classifier_5"] and a.examples[1][1].shape[0] == 3
    rl = random_logit(ex, x[:4], y[:4], examples=2)
    assert [n for n, _ in rl.examples] == ["true", "random"] and rl.examples[0][1].shape == (2, 3, 32, 32)
