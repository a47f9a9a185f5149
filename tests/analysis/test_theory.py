"""The layer matrices in numbers (rulelang.analysis.theory) and the random-matrix simulation (paper.md §2.5)."""

import json

import pytest
import torch

import rulelang
from rulelang.analysis import simulate_chain, theory
from rulelang.analysis.stats import AnalysisError
from rulelang.analysis.theory import VGG16_BACKWARD, backward_shapes


@pytest.fixture(scope="module")
def x():
    images, _ = rulelang.builtin_data("digits-rgb", split="test")
    return images[:1]


@pytest.fixture(scope="module")
def cnn():
    return rulelang.builtin_model("digits-cnn")


@pytest.fixture(scope="module")
def gradient_chain(cnn, x):
    ex = rulelang.compile(cnn, "gradient", example_input=x)
    return theory(ex, x, kinds=("dense",))


def test_zplus_maps_are_non_negative_and_the_chain_collapses(cnn, x, gradient_chain):
    res = theory(rulelang.compile(cnn, "lrp-zplus", example_input=x), x)
    assert res.linear and res.nonnegative, str(res)
    assert [n.node for n in res.nodes] == [
        "features_0", "features_2", "features_5", "features_7", "features_10", "features_12", "classifier_2",
        "classifier_5",
    ]  # fmt: skip
    assert {n.method for n in res.nodes} == {"channels+columns", "exact"}
    assert res.gradient is None  # only signed chains are compared with the gradient
    inp, grad = res.chain_at("input"), gradient_chain.chain_at("input")
    # measured: σ2/σ1 of the 10-column product at the input 0.06-0.08 (z+) vs 0.68-0.76 (gradient); the paper's
    # VGG-16 would give < 0.01 — this 8-layer net collapses per position (CSC) but less in whole maps
    assert inp.sigma_ratio < 0.2 and inp.sigma_ratio < grad.sigma_ratio / 4, str(res)
    assert inp.median_cos > 0.97 and grad.median_cos < 0.6
    assert res.chain_at("classifier_5").median_cos == 0  # unit vectors at the logits are orthogonal
    json.dumps(res.to_dict())
    assert "features_0" in str(res)


def test_gradient_node_map_is_the_transposed_weight(cnn, gradient_chain):
    node = {n.node: n for n in gradient_chain.nodes}["classifier_5"]
    assert node.method == "exact" and (node.n_in, node.n_out) == (128, 10)
    s = torch.linalg.svdvals(cnn.classifier[5].weight.detach().double())
    assert node.sigma1 == pytest.approx(float(s[0]), rel=1e-5)
    assert node.sigma2 == pytest.approx(float(s[1]), rel=1e-5)
    w = cnn.classifier[5].weight.detach()
    assert node.min == pytest.approx(float(w.min()), rel=1e-5) and node.max == pytest.approx(float(w.max()), rel=1e-5)
    assert gradient_chain.linear and not gradient_chain.nonnegative


def test_signed_rule_is_compared_with_the_gradient(cnn, x):
    res = theory(rulelang.compile(cnn, "lrp-alpha2-beta1", example_input=x), x, kinds=("dense",))
    assert not res.nonnegative and res.gradient is not None
    g = res.gradient
    assert g["chain_ratio_input"] > 0.4 and g["gradient_product"] > 0 and g["rule_product"] > 0
    assert "Gradient chain" in str(res)


def test_non_linear_rule_is_flagged(cnn, x):
    res = theory(rulelang.compile(cnn, "guided-backprop", example_input=x), x, kinds=())
    assert not res.linear and res.linearity_error > 1e-3 and res.nodes == []


def test_backward_shapes():
    ex = rulelang.compile(rulelang.builtin_model("digits-cnn"), "gradient", example_input=torch.rand(1, 3, 32, 32))
    assert backward_shapes(ex) == (10, 128, 64, 64, 32, 32, 16, 16, 3)
    assert len(VGG16_BACKWARD) == 17  # 16 matrices, logits -> RGB


def test_simulation_reproduces_the_papers_table():
    # research/paper.md §2.5 (distinct pairs): α1β0 .99985 after 3; vanilla .55 at RGB (random); α10β9 .58 at 16
    a1 = simulate_chain("alpha-beta", alpha=1, reps=2, include_diagonal=False)
    assert a1.curve[2] >= 0.999 and a1.layers_to_threshold <= 3
    van = simulate_chain("vanilla", reps=2, include_diagonal=False)
    assert van.curve[7] < 0.2 and 0.4 < van.curve[-1] < 0.65 and van.layers_to_threshold is None
    a10 = simulate_chain("alpha-beta", alpha=10, reps=2, include_diagonal=False)
    assert a10.layers_to_threshold is None and a10.curve[11] < 0.5
    small = [1000, 512, 512, 256, 64]
    assert simulate_chain("positive", dims=small, reps=2).layers_to_threshold <= 3
    assert (
        simulate_chain("relu", dims=small, reps=2, seed=1).curve
        == simulate_chain("relu", dims=small, reps=2, seed=1).curve
    )
    d = a1.to_dict()
    assert d["beta"] == 0 and len(d["curve"]) == 16 and "α1β0" in str(a1)


def test_simulation_rejects_bad_input():
    with pytest.raises(AnalysisError, match="unknown matrix family"):
        simulate_chain("nope")
    with pytest.raises(AnalysisError, match="alpha >= 1"):
        simulate_chain("alpha-beta", alpha=0.5)
    with pytest.raises(AnalysisError, match="dims"):
        simulate_chain("vanilla", dims=[3])
