"""Inter-layer items S_a^{1/2} V_aᵀ U_b S_b^{1/2} of the chain of layer maps (research/paper.md §5.1 point 4).

Closed-form toys for `interlayer_factors`, the factorization checked against the measured chain on exact cases
(small nets and the trained digits-cnn's dense part), the per-pair composition check of channel transfer matrices,
and z+ against the gradient on small random ReLU nets."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import rulelang
from rulelang.analysis.stats import AnalysisError
from rulelang.analysis.theory import interlayer_factors, theory


def _chain_product(factors):
    out = factors[0]
    for f in factors[1:]:
        out = out @ f
    return out


def _rotation(theta):
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


# ------------------------------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("theta", [0.0, math.pi / 4, math.pi / 2, 2.0])
def test_two_by_two_item_has_the_closed_form_singular_values(theta):
    # M1 = diag(3, 1) (U1 = V1 = I), M2 = R(θ) diag(2, 1) (U2 = R(θ), V2 = I): the item is diag(√3, 1) R(θ) diag(√2, 1)
    # with σ1 σ2 = det = √6 and σ1² + σ2² = ‖·‖_F² = 7 cos²θ + 5 sin²θ
    m1, m2 = np.diag([3.0, 1.0]), _rotation(theta) @ np.diag([2.0, 1.0])
    factors, ((s1, s2),) = interlayer_factors([m1, m2])
    c2, s2n = math.cos(theta) ** 2, math.sin(theta) ** 2
    total, prod = 7 * c2 + 5 * s2n, math.sqrt(6)
    disc = math.sqrt(max(total**2 - 4 * prod**2, 0.0))
    assert s1 == pytest.approx(math.sqrt((total + disc) / 2), rel=1e-12)
    assert s2 == pytest.approx(math.sqrt((total - disc) / 2), rel=1e-9, abs=1e-12)
    assert len(factors) == 3
    np.testing.assert_allclose(_chain_product(factors), m1 @ m2, atol=1e-12)


def test_aligned_and_crossed_toys():
    m1 = np.diag([3.0, 1.0])
    _, ((a1, a2),) = interlayer_factors([m1, np.diag([2.0, 1.0])])  # aligned: item diag(√6, 1)
    assert a1 / a2 == pytest.approx(math.sqrt(6), rel=1e-12)
    _, ((c1, c2),) = interlayer_factors([m1, np.array([[0.0, -1.0], [2.0, 0.0]])])  # crossed: item [[0,-√3],[√2,0]]
    assert (c1, c2) == (pytest.approx(math.sqrt(3), rel=1e-12), pytest.approx(math.sqrt(2), rel=1e-12))
    # the item does not depend on the singular vectors' signs, nor on rotations within a repeated singular value
    _, ((d1, d2),) = interlayer_factors([-m1, np.diag([2.0, 1.0])])
    assert (d1, d2) == (pytest.approx(a1, rel=1e-12), pytest.approx(a2, rel=1e-12))
    _, ((e1, e2),) = interlayer_factors([_rotation(0.7), _rotation(0.3) @ np.diag([2.0, 1.0])])  # S_1 = I
    assert (e1, e2) == (pytest.approx(math.sqrt(2), rel=1e-12), pytest.approx(1.0, rel=1e-12))


def test_factors_reproduce_rectangular_and_rank_deficient_chains():
    rng = np.random.default_rng(0)
    mats = [rng.standard_normal(s) for s in [(5, 4), (4, 7), (7, 3), (3, 6)]]
    factors, items = interlayer_factors(mats)
    assert [f.shape for f in factors] == [(5, 4), (4, 4), (4, 3), (3, 3), (3, 6)] and len(items) == 3
    np.testing.assert_allclose(_chain_product(factors), mats[0] @ mats[1] @ mats[2] @ mats[3], atol=1e-10)
    assert all(s1 >= s2 > 0 for s1, s2 in items)
    rank1 = np.outer(rng.standard_normal(4), rng.standard_normal(4))
    _, ((s1, s2),) = interlayer_factors([rank1, mats[1]])
    assert s1 > 0 and s2 == pytest.approx(0.0, abs=1e-7 * s1)


def test_interlayer_factors_rejects_bad_input():
    with pytest.raises(AnalysisError, match="columns"):
        interlayer_factors([np.ones((2, 3)), np.ones((2, 3))])
    with pytest.raises(AnalysisError, match="2-D"):
        interlayer_factors([np.ones(3)])


# ------------------------------------------------------------------------------------ measured: exact cases
def _mlp(seed, widths):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def test_gradient_items_are_those_of_the_masked_transposed_weights():
    model = _mlp(0, (6, 8, 8, 4))
    x = torch.rand(1, 6, generator=torch.Generator().manual_seed(0))
    res = theory(rulelang.compile(model, "gradient", example_input=x), x, progress=False)
    il = res.interlayer
    assert [(it.upper, it.lower, it.basis) for it in il.items] == [("_4", "_2", "units"), ("_2", "_0", "units")]
    assert il.computed == il.pairs == 2 and il.factor_error is not None and il.factor_error < 1e-5, str(res)
    # block maps by hand (rows: the lower node's units): W1ᵀ, diag(relu'(z1)) W2ᵀ, diag(relu'(z2)) W3ᵀ
    with torch.no_grad():
        z1 = model[0](x)
        z2 = model[2](model[1](z1))
    w = [model[k].weight.detach().double() for k in (0, 2, 4)]
    d1, d2 = (z1[0] > 0).double(), (z2[0] > 0).double()
    blocks = [w[0].T, d1[:, None] * w[1].T, d2[:, None] * w[2].T]
    _, items = interlayer_factors(blocks)
    for it, (s1, s2) in zip(il.items[::-1], items, strict=True):  # il.items run top-down, `items` bottom-up
        assert it.sigma1 == pytest.approx(s1, rel=1e-4) and it.sigma2 == pytest.approx(s2, rel=1e-4)
    assert il.product == pytest.approx(math.prod(s1 / s2 for s1, s2 in items), rel=1e-4)


@pytest.fixture(scope="module")
def digits():
    images, _ = rulelang.builtin_data("digits-rgb", split="test")
    return rulelang.builtin_model("digits-cnn"), images[:1]


@pytest.mark.parametrize("rule", ["lrp-zplus", "gradient"])
def test_trained_dense_chain_factorizes(digits, rule):
    # kinds=("dense",): blocks classifier_5 -> classifier_2 -> input, all exact; the product of the factors
    # U_1 S_1^½ · item · S_2^½ V_2ᵀ must reproduce the measured 3072 × 10 chain at the input
    model, x = digits
    res = theory(rulelang.compile(model, rule, example_input=x), x, kinds=("dense",), progress=False)
    il = res.interlayer
    assert [(it.upper, it.lower) for it in il.items] == [("classifier_5", "classifier_2")]
    assert il.computed == 1 and il.items[0].composition_error < 1e-4
    assert il.factor_error is not None and il.factor_error < 1e-4, str(il)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["interlayer"]["product"] == pytest.approx(il.items[0].ratio)
    assert "Inter-layer items" in str(res) and "factor product vs measured chain" in str(res)


def test_signed_rule_reports_its_interlayer_product_against_the_gradient(digits):
    model, x = digits
    res = theory(rulelang.compile(model, "lrp-alpha2-beta1", example_input=x), x, kinds=("dense",), progress=False)
    g = res.gradient
    assert g["interlayer_pairs"] == [["classifier_5", "classifier_2"]]
    assert g["rule_interlayer_product"] == pytest.approx(res.interlayer.product)
    assert g["gradient_interlayer_product"] == pytest.approx(g["interlayer"]["product"])
    ratio = g["rule_interlayer_product"] / g["gradient_interlayer_product"]
    assert g["interlayer_product_ratio"] == pytest.approx(ratio)
    assert g["interlayer_log10_ratio"] == pytest.approx(math.log10(ratio))
    assert "Inter-layer Π σ1/σ2 over the 1 pair(s) both compute" in str(res)


def test_zplus_items_dominate_the_gradients_on_random_relu_nets():
    # non-negative maps have a Perron mode that lines up from layer to layer; the gradient's signed maps do not.
    # Measured (seeds 0-5, widths 16-32-32-32-32-10): z+ products 15-31, gradient 1.4-1.9; asserted with a margin
    for seed in range(3):
        model = _mlp(seed, (16, 32, 32, 32, 32, 10))
        x = torch.rand(1, 16, generator=torch.Generator().manual_seed(seed))
        zp = theory(rulelang.compile(model, "lrp-zplus", example_input=x), x, progress=False, compare_gradient=True)
        assert zp.interlayer.computed == zp.interlayer.pairs == 4 and zp.interlayer.factor_error < 1e-5
        g = zp.gradient
        assert len(g["interlayer_pairs"]) == 4
        assert g["rule_interlayer_product"] > 2 * g["gradient_interlayer_product"], str(zp)
        assert g["interlayer_log10_ratio"] > math.log10(2)


# ------------------------------------------------------------------------------ channel transfer matrices
def _convnet(k, act):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, k, padding=k // 2),
        act(),
        nn.Conv2d(8, 8, k, padding=k // 2),
        act(),
        nn.Conv2d(8, 6, k, padding=k // 2),
        nn.AvgPool2d(4),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).eval()


def _interlayer(model, rule, x):
    # exact_limit=16: the 8×4×4 conv outputs are reduced to channel transfer matrices
    return theory(rulelang.compile(model, rule, example_input=x), x, exact_limit=16, progress=False).interlayer


def test_channel_transfer_composes_in_a_channelwise_chain():
    # 1×1 convs, no activation, gradient: every map is the same channel mixing at every position, so the
    # channel sums compose (up to the number of positions) and the factors reproduce the chain
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    il = _interlayer(_convnet(1, nn.Identity), "gradient", x)
    assert [it.basis for it in il.items] == ["units", "channels", "channels", "channels"]
    assert il.computed == il.pairs == 4 and il.factor_error < 1e-5, str(il)
    # the logits not measured (kinds=conv): the top block runs from them to the last conv, over the pool
    ex = rulelang.compile(_convnet(1, nn.Identity), "gradient", example_input=x)
    top = theory(ex, x, kinds=("conv",), exact_limit=16, progress=False).interlayer
    assert [(it.upper, it.lower) for it in top.items] == [("_7", "_4"), ("_4", "_2"), ("_2", "_0")]
    assert top.computed == 3 and top.factor_error < 1e-5
    assert top.items[1].ratio == pytest.approx(il.items[2].ratio, rel=1e-6)  # the same conv blocks
    # z+ through 1×1 convs and ReLUs composes when every position sees the same activations ...
    const = torch.rand(1, 3, 1, 1, generator=torch.Generator().manual_seed(1)).expand(1, 3, 4, 4).contiguous()
    il = _interlayer(_convnet(1, nn.ReLU), "lrp-zplus", const)
    assert il.computed == il.pairs == 4 and il.factor_error < 1e-5, str(il)
    # ... but not when its coefficients vary over positions: those pairs are reported, not computed
    il = _interlayer(_convnet(1, nn.ReLU), "lrp-zplus", x)
    bad = [it for it in il.items if it.ratio is None]
    assert bad and all(it.composition_error > 1e-4 and "do not compose" in it.note for it in bad), str(il)
    assert il.factor_error is None and il.computed < il.pairs
    assert il.product == pytest.approx(math.prod(it.ratio for it in il.items if it.ratio is not None))


def test_three_by_three_convs_with_relu_do_not_compose_as_channel_sums():
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    il = _interlayer(_convnet(3, nn.ReLU), "gradient", x)
    by = {(it.upper, it.lower): it for it in il.items}
    assert by[("_7", "_5")].ratio is not None  # exact dense over the pool
    # the conv pairs: zero padding and ReLU masks make the maps differ between positions
    assert by[("_2", "_0")].ratio is None and by[("_2", "_0")].composition_error > 1e-3
    d = il.to_dict()
    assert d["computed"] == il.computed < d["pairs"] == 4
    assert next(i for i in d["items"] if i["lower"] == "_0")["sigma1_over_sigma2"] is None
