"""Methods no peer implements in PyTorch (RectGrad, bounded DTD, DeepLIFT Rescale / RevealCancel / the paper's
ablation), against the independent matrix-form reference (rule_reference.py, from research/paper.md §1.4) on small
sequential and residual nets; plus DeepLIFT's summation-to-delta and LRP conservation on bias-free nets."""

import pytest
import torch

from tests.helpers import rule_oracles as O
from tests.helpers import rule_reference as ref
from tests.helpers import toy_nets

NETS = {
    "cnn": lambda bias=True: toy_nets.cnn(seed=1, bias=bias),
    "resnet": lambda bias=True: toy_nets.resnet(seed=2, bias=bias),
}


def _setup(kind, bias=True, n=3):
    net = NETS[kind](bias)
    x = toy_nets.inputs(n, seed={"cnn": 11, "resnet": 12}[kind])
    return net, x, O.labels(net, x)


@pytest.mark.parametrize("kind", list(NETS))
def test_rectgrad_matches_reference(kind):
    net, x, t = _setup(kind)
    mine = O.ours(net, "rectgrad", x, t)
    O.assert_close(mine, ref.rectgrad(net, x, t, q=98.0), what="rectgrad q=98")
    mine = O.ours(net, "rectgrad", x, t, q=60.0)
    O.assert_close(mine, ref.rectgrad(net, x, t, q=60.0), what="rectgrad q=60")


@pytest.mark.parametrize("kind", list(NETS))
@pytest.mark.parametrize("bounds", ["scalar", "per-channel"])
def test_dtd_bounded_matches_reference(kind, bounds):
    net, x, t = _setup(kind)
    if bounds == "scalar":
        lo, hi = float(x.min()), float(x.max())
        mine = O.ours(net, "dtd-bounded", x, t, lo=lo, hi=hi)
    else:
        lo_c = x.amin(dim=(0, 2, 3)) - 0.5
        hi_c = x.amax(dim=(0, 2, 3)) + 0.5
        mine = O.ours(net, "dtd-bounded", x, t, lo=lo_c.tolist(), hi=hi_c.tolist())
        lo = lo_c[:, None, None].expand(x.shape[1:]).reshape(-1)
        hi = hi_c[:, None, None].expand(x.shape[1:]).reshape(-1)
    O.assert_close(mine, ref.dtd_bounded(net, x, t, lo, hi), what=f"dtd-bounded ({bounds} bounds)")


def test_dtd_bounded_is_non_negative_within_bounds():
    """Every factor of bounded DTD is non-negative when lo <= x <= hi (and the logit is positive): so is the map."""
    net, x, _ = _setup("cnn")
    t = O.labels(net, x)
    mine = O.ours(net, "dtd-bounded", x, t, lo=float(x.min()), hi=float(x.max()))
    with torch.no_grad():
        logit = net(x).gather(1, t[:, None]).squeeze(1)
    assert (logit > 0).all()
    assert (mine >= -1e-12).all()


@pytest.mark.parametrize("kind", list(NETS))
@pytest.mark.parametrize("reference", ["zeros", "given"])
def test_deeplift_rescale_matches_reference(kind, reference):
    net, x, t = _setup(kind)
    if reference == "zeros":
        mine, base = O.ours(net, "deeplift-rescale", x, t), None
    else:
        import rulelang

        base = 0.5 * toy_nets.inputs(x.shape[0], seed=11)
        mine = rulelang.compile(net, "deeplift-rescale", example_input=x)(x, target=t, reference=base)
    O.assert_close(mine, ref.deeplift(net, x, t, "rescale", baseline=base), what="deeplift-rescale")


@pytest.mark.parametrize("kind", list(NETS))
def test_deeplift_ablation_matches_reference(kind):
    net, x, t = _setup(kind)
    O.assert_close(
        O.ours(net, "deeplift-ablation", x, t),
        ref.deeplift(net, x, t, "rescale", cross=False),
        what="deeplift-ablation",
    )


@pytest.mark.parametrize("kind", list(NETS))
def test_deeplift_reveal_cancel_matches_reference(kind):
    """Needs two relevance streams and per-node forward quantities in the compiler."""
    net, x, t = _setup(kind)
    O.assert_close(
        O.ours(net, "deeplift-reveal-cancel", x, t),
        ref.deeplift(net, x, t, "reveal_cancel"),
        what="deeplift-reveal-cancel",
    )


def _maxpool_free(seed):
    C = torch.nn.Conv2d
    net = ref.sequential(
        C(3, 5, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        C(5, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(96, 10),
        torch.nn.ReLU(),
        torch.nn.Linear(10, 4),
    )
    return toy_nets._init(net, seed)


@pytest.mark.parametrize("rule", ["deeplift-rescale", "deeplift-reveal-cancel"])
def test_deeplift_sums_to_delta(rule):
    """Summation-to-delta: attributions add up to f(x) - f(x0) for the explained logit (nets without max-pool,
    whose switch rule breaks it, see test_captum_oracles.test_captum_maxpool_rule_differs)."""
    net = _maxpool_free(4)
    x = toy_nets.inputs(3, seed=5)
    t = O.labels(net, x)
    base = 0.2 * torch.ones_like(x)
    import rulelang

    a = rulelang.compile(net, rule, example_input=x)(x, target=t, reference=base)
    with torch.no_grad():
        delta = (net(x) - net(base)).gather(1, t[:, None]).squeeze(1)
    torch.testing.assert_close(a.flatten(1).sum(1), delta, rtol=1e-6, atol=1e-9)


CONSERVATIVE = [
    "lrp-epsilon",
    "lrp-z",
    "lrp-zplus",
    "lrp-alpha1-beta0",
    "lrp-gamma",
    "lrp-epsilon-plus",
    "lrp-epsilon-plus-flat",
    "lrp-cmp-alpha1-beta0",
    "excitation-bp",
    "lrp-zbox",
    "lrp-epsilon-gamma-box",
]
# not alpha-beta with beta > 0: a unit with no negative contribution (zn = 0, e.g. a 1x1 conv whose weights into
# it are all positive) returns alpha * R instead of R (test_toy_cases.test_alpha_beta_without_negative_part);
# not flat / w-square everywhere: they give relevance to dead units, and the x-weighted z-rule of the next
# average pool or add below drops it.
# not dtd-bounded: its w-square top layer gives relevance to every input, dead ReLU units included, and the ReLU's
# gradient (iNNvestigate's DTD) then drops that share (test_dtd_bounded_loses_relevance_at_dead_units)


# z+ (alpha1-beta0) loses the relevance of a unit without positive contributions (zp = 0); after a ReLU such a
# unit is dead and gets none, but a residual add hands relevance to the branch's pre-activation conv output, so
# the z+ family is conservative on sequential ReLU nets only
ZPLUS_FAMILY = {
    "lrp-zplus",
    "lrp-alpha1-beta0",
    "lrp-epsilon-plus",
    "lrp-epsilon-plus-flat",
    "lrp-cmp-alpha1-beta0",
    "excitation-bp",
}


@pytest.mark.parametrize(
    "kind, rule", [(k, r) for r in CONSERVATIVE for k in NETS if not (k == "resnet" and r in ZPLUS_FAMILY)]
)
def test_lrp_conserves_relevance_without_bias(kind, rule):
    """On bias-free ReLU nets every conservative LRP rule hands the logit's value down to the input (up to the
    stabiliser's eps share)."""
    net, x, t = _setup(kind, bias=False)
    params = {"lo": -5.0, "hi": 5.0} if rule in ("lrp-zbox", "lrp-epsilon-gamma-box") else {}
    a = O.ours(net, rule, x, t, **params)
    with torch.no_grad():
        logit = net(x).gather(1, t[:, None]).squeeze(1)
    # what the rule seeds with is what it conserves: the logit's value, or 1 for excitation-bp (init: target)
    seed = torch.ones_like(logit) if rule == "excitation-bp" else logit
    torch.testing.assert_close(a.flatten(1).sum(1), seed, rtol=1e-4, atol=1e-8)


def test_dtd_bounded_loses_relevance_at_dead_units():
    """Documented: bounded DTD is not conservative on ReLU nets: w-square (top) and the gradient through average
    pools hand relevance to dead units, and the ReLU gradient below drops it."""
    net, x, t = _setup("cnn", bias=False)
    a = O.ours(net, "dtd-bounded", x, t, lo=-5.0, hi=5.0)
    with torch.no_grad():
        logit = net(x).gather(1, t[:, None]).squeeze(1)
    assert (a.flatten(1).sum(1) < logit - 1e-3).all()
