"""CSC where the paper measured it: deep networks (research/paper.md §2.3, §3).

On the 8-layer digits-cnn the non-negative rules converge per position but their whole maps at the input reach only
~0.97 (tests/analysis/test_csc.py); on the 16-layer digits-vgg16 they reach 1 and the relevance chain is rank 1 in
numbers (σ2/σ1 < 0.01). The signed rules track the random baseline on torchvision's VGG16 with 1000 logits, as in the
paper; on the 10-class digits models they stay far from 1 but above the baseline (the per-pixel channel direction of
the gradient hardly depends on the logit there: see the issue-9 note), which test_csc.py asserts.
"""

import pytest
import torch
import torchvision

import rulelang
from rulelang.analysis import csc, theory

CONVERGING = ["lrp-zplus", "lrp-alpha1-beta0", "excitation-bp", "dtd-bounded"]
SIGNED = ["gradient", "lrp-z", "deeplift-rescale"]


@pytest.fixture(scope="module")
def digits():
    x, _ = rulelang.builtin_data("digits-rgb", split="test")
    return x[:2]


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


@pytest.mark.parametrize("rule", CONVERGING)
def test_non_negative_rules_collapse_on_digits_vgg16(digits, rule):
    x = digits
    ex = rulelang.compile(rulelang.builtin_model("digits-vgg16"), rule, example_input=x[:1], input_bounds=(0.0, 1.0))
    res = csc(ex, x)
    assert res.lowest().channels > 1
    assert res.lowest().median >= 0.99, str(res)
    assert res.readout("input").whole_map >= 0.99, str(res)


@pytest.mark.parametrize("rule", SIGNED)
def test_signed_rules_do_not_collapse_on_digits_vgg16(digits, rule):
    x = digits
    ex = rulelang.compile(rulelang.builtin_model("digits-vgg16"), rule, example_input=x[:1])
    res = csc(ex, x)
    # measured at features_0 (4 images): gradient 0.88, lrp-z 0.97, deeplift-rescale 0.86 (z+: 1 - 1e-6): per
    # position these trained 10-class nets sit far above the baseline for every rule
    assert 1 - res.lowest().median > 0.01, str(res)


def test_chain_is_rank_one_for_zplus_and_not_for_the_gradient(digits):
    """theory(): the accumulated relevance map from the logits to the input, σ2/σ1 (paper §5.1 point 4)."""
    model = rulelang.builtin_model("digits-vgg16")
    ratios = {}
    for rule in ("lrp-zplus", "gradient"):
        ex = rulelang.compile(model, rule, example_input=digits[:1], input_bounds=(0.0, 1.0))
        ratios[rule] = theory(ex, digits[:1], kinds=[], compare_gradient=False).chain_at("input").sigma_ratio
    # measured (1 image): z+ 4.5e-6, gradient 0.31; 4 images: z+ 4.8e-6, gradient 0.30 (lrp-z 0.18, deeplift-rescale 0.30)
    assert ratios["lrp-zplus"] < 0.01 < 0.05 < ratios["gradient"], ratios


@pytest.mark.parametrize("rule", ["gradient", "deeplift-rescale", "lrp-zplus"])
def test_torchvision_vgg16_with_1000_logits(vgg, rule):
    """Random weights, 64×64, 2 images. Per position at the 13 conv layers (measured): the gradient 1.3–3.0× the
    §3.1 baseline, deeplift-rescale 1.9–4.5×, z+ at 1; at the input the gradient 0.51 (baseline 0.50), DeepLIFT 0.70.

    lrp-z and lrp-epsilon are not here: with random weights a few pre-activations are ~1e-6 (logits: median |z|
    0.04, minimum 2e-5 and 7e-7), the z-division makes those units dominate every probe, and all probes align
    (|cos| ≈ 31× baseline at the conv layers, 0.99 at the input) — a numerical degeneracy of z/ε without a
    sizeable ε, not the rank-1 collapse of a non-negative chain; see test_z_rule_on_random_weights.
    """
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    res = csc(rulelang.compile(vgg, rule, example_input=x[:1]), x)
    conv = [r for r in res.injections["output"] if r.node.startswith("features")]
    inp = res.readout("input")
    assert len(conv) == 31
    if rule == "lrp-zplus":
        assert all(r.median >= 0.99 for r in conv) and inp.median >= 0.99 and inp.whole_map >= 0.99, str(res)
        return
    bound = 3.5 if rule == "gradient" else 5.0
    assert all(r.median < bound * r.baseline for r in conv), str(res)
    assert inp.median < (0.55 if rule == "gradient" else 0.8) and inp.whole_map < 0.2, str(res)


def test_z_rule_on_random_weights(vgg):
    """The degeneracy documented above, asserted so that a change in it is noticed: injected at the logits, lrp-z's
    probes align below the top layer; injected one layer lower (classifier_4, 4096 units) they do not at the
    next dense readout."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    res = csc(rulelang.compile(vgg, "lrp-z", example_input=x[:1]), x, at=["output", "classifier_4"])
    top = res.readout("classifier_3", "output")
    low = res.readout("classifier_3", "classifier_4")
    assert top.median > 0.5 > 5 * low.baseline > low.median, (top.to_dict(), low.to_dict())
