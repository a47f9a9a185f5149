"""Hand-computed toy cases for alpha-beta, z+, epsilon, bias and negative inputs — the cases behind captum #1234,
iNNvestigate #273 and zennit #53 (research/peers.md).

Bias convention of every rulelang LRP file (zennit's): z = sum_i x_i w_i + b; the positive denominator of
alpha-beta / z+ is sum(x.pos w.pos + x.neg w.neg) + b.pos, the negative one sum(x.pos w.neg + x.neg w.pos) + b.neg;
the bias is counted once (its positive part with the positive half), and its share of relevance is absorbed, not
returned — so relevance is conserved exactly only where b = 0.
"""

import pytest
import torch

from tests.helpers import rule_oracles as O

D = torch.float64


def dense(w, b):
    layer = torch.nn.Linear(len(w), 1).to(D)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([w], dtype=D))
        layer.bias.copy_(torch.tensor([b], dtype=D))
    return torch.nn.Sequential(layer)


def explain(model, rule, x, **params):
    x = torch.tensor([x], dtype=D)
    return O.ours(model, rule, x, torch.tensor([0]), **params)[0]


def test_innvestigate_273_alpha1_beta0():
    """W = (1, -1), b = -1, x = (1, 1): z = -1. Positive part 1 (b.pos = 0): R = (1 * 1 / 1) * z = (-1, 0)
    (iNNvestigate returned -1e7 here)."""
    r = explain(dense([1.0, -1.0], -1.0), "lrp-alpha1-beta0", [1.0, 1.0])
    torch.testing.assert_close(r, torch.tensor([-1.0, 0.0], dtype=D), rtol=1e-5, atol=1e-8)


def test_innvestigate_273_alpha2_beta1():
    """Same layer: negative part x2 w2 + b = -1 - 1 = -2, so R2 = -1 * (-1 / -2) * z = 0.5 and R1 = 2 * z = -2."""
    r = explain(dense([1.0, -1.0], -1.0), "lrp-alpha2-beta1", [1.0, 1.0])
    torch.testing.assert_close(r, torch.tensor([-2.0, 0.5], dtype=D), rtol=1e-5, atol=1e-8)


def test_captum_1234_zplus_with_negative_inputs():
    """w = (2, -1), x = (-1, -3): contributions -2 and +3, z = 1. z+ credits the input that pushed z up
    (x.neg with w.neg): R = (0, 1). Clamping only the weights (captum's Alpha1_Beta0_Rule) gives (1, 0)."""
    for rule in ("lrp-zplus", "lrp-alpha1-beta0", "excitation-bp"):
        r = explain(dense([2.0, -1.0], 0.0), rule, [-1.0, -3.0])
        torch.testing.assert_close(r, torch.tensor([0.0, 1.0], dtype=D), rtol=1e-5, atol=1e-8, msg=rule)


def test_zennit_53_bias_counted_once():
    """w = 1, b = -1, x = 2: z = 1; positive part 2 (b.pos = 0), negative part b.neg = -1 with no input share.
    alpha2-beta1: R = 2 * (2 / 2) * 1 - 1 * (0 / -1) * 1 = 2; the bias enters the negative half only."""
    r = explain(dense([1.0], -1.0), "lrp-alpha2-beta1", [2.0])
    torch.testing.assert_close(r, torch.tensor([2.0], dtype=D), rtol=1e-5, atol=1e-8)
    # a positive bias joins the positive half once: x = 1, w = 1, b = 1 -> z = 2, R = 1 * (1 / 2) * 2 = 1
    r = explain(dense([1.0], 1.0), "lrp-alpha1-beta0", [1.0])
    torch.testing.assert_close(r, torch.tensor([1.0], dtype=D), rtol=1e-5, atol=1e-8)


def test_alpha_beta_without_negative_part():
    """No negative contribution and no negative bias: the beta term has nothing to divide (0 / eps = 0), so
    alpha-beta returns alpha * R, not R (why alpha-beta with beta > 0 is not conservative in general)."""
    r = explain(dense([1.0, 2.0], 0.0), "lrp-alpha2-beta1", [1.0, 1.0])
    torch.testing.assert_close(r, 2.0 * torch.tensor([1.0, 2.0], dtype=D), rtol=1e-5, atol=1e-8)


def test_epsilon_and_z_absorb_the_bias():
    """x = (1, 2), w = (1, 1), b = 1: z = 4, R = z = 4; R_i = x_i w_i / z * R = (1, 2): the bias keeps 1."""
    for rule in ("lrp-epsilon", "lrp-z"):
        r = explain(dense([1.0, 1.0], 1.0), rule, [1.0, 2.0])
        torch.testing.assert_close(r, torch.tensor([1.0, 2.0], dtype=D), rtol=1e-5, atol=1e-8, msg=rule)


def test_epsilon_value():
    """eps = 1: R_i = x_i w_i / (z + 1) * z = (1, 2) * 4 / 5."""
    r = explain(dense([1.0, 1.0], 1.0), "lrp-epsilon", [1.0, 2.0], eps=1.0)
    torch.testing.assert_close(r, torch.tensor([0.8, 1.6], dtype=D), rtol=1e-6, atol=1e-9)


def test_zbox_closed_form():
    """w = (1, -2), b = 0.5, x = (0.5, -0.5), bounds [-1, 1]: numerators x w - lo w.pos - hi w.neg =
    (0.5 + 1, 1 + 2) = (1.5, 3), sum 4.5; z = 1.5 + 0.5 = 2 is the seed, so R = (1.5, 3) / 4.5 * 2."""
    r = explain(dense([1.0, -2.0], 0.5), "lrp-zbox", [0.5, -0.5], lo=-1.0, hi=1.0)
    torch.testing.assert_close(r, torch.tensor([1.5, 3.0], dtype=D) / 4.5 * 2.0, rtol=1e-5, atol=1e-8)


def test_wsquare_and_flat_closed_form():
    """w = (1, -2), b = 0.5: w-square shares w^2 / (sum w^2 + b^2) = (1, 4) / 5.25 (zennit keeps b^2); flat
    shares 1 / 2 each; both of the seed z = x w + b."""
    x = [0.5, -0.5]
    z = 0.5 + 1.0 + 0.5
    r = explain(dense([1.0, -2.0], 0.5), "lrp-wsquare", x)
    torch.testing.assert_close(r, torch.tensor([1.0, 4.0], dtype=D) / 5.25 * z, rtol=1e-5, atol=1e-8)
    r = explain(dense([1.0, -2.0], 0.5), "lrp-flat", x)
    torch.testing.assert_close(r, torch.tensor([0.5, 0.5], dtype=D) * z, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (2.0, 1.0), (5.0, 4.0)])
def test_alpha_beta_hidden_layer_textbook(alpha, beta):
    """Non-negative inputs, no bias: R_i = (alpha x_i w_i+ / sum x w+ - beta x_i w_i- / sum x w-) * z."""
    w, x = [1.0, -2.0, 3.0], [2.0, 1.0, 0.5]
    z = 2.0 - 2.0 + 1.5
    zp, zn = 2.0 + 1.5, -2.0
    expect = torch.tensor([alpha * 2.0 / zp, -beta * (-2.0) / zn, alpha * 1.5 / zp], dtype=D) * z
    r = explain(dense(w, 0.0), "lrp-alpha-beta", x, alpha=alpha, beta=beta)
    torch.testing.assert_close(r, expect, rtol=1e-5, atol=1e-8)


def test_alpha_beta_requires_alpha_minus_beta_one():
    import rulelang

    with pytest.raises(rulelang.RulelangError):
        explain(dense([1.0], 0.0), "lrp-alpha-beta", [1.0], alpha=2.0, beta=2.0)
