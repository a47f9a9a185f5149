"""The oracle harness checks itself: zennit and captum agree with the independent matrix-form reference on toy
nets, so a later disagreement between a rule file and an oracle points at the rule file (or the compiler)."""

import pytest
import torch

from tests.helpers import rule_oracles as O
from tests.helpers import rule_reference as ref
from tests.helpers import toy_nets


@pytest.fixture(scope="module")
def toy():
    net = toy_nets.cnn(seed=3)
    x = toy_nets.inputs(3, seed=3)
    return net, x, O.labels(net, x)


LO = torch.tensor([-2.5, -2.0, -3.0], dtype=torch.float64).reshape(1, 3, 1, 1)
HI = torch.tensor([2.5, 3.0, 2.0], dtype=torch.float64).reshape(1, 3, 1, 1)


def _zlin(rule):
    """A reference rule for conv/dense that also treats avg-pools as zennit's Norm (z-rule)."""
    return {"linear": rule, "avgpool": ref.lrp_epsilon, "relu": ref.g_copy, "add": ref.lrp_add_z}


@pytest.mark.parametrize(
    "zennit_rule, kwargs, rules",
    [
        ("Epsilon", {}, _zlin(ref.lrp_epsilon)),
        ("ZPlus", {}, _zlin(ref.lrp_zplus)),
        ("WSquare", {}, _zlin(lambda n, k, xs, y, R: ref.lrp_wsquare(n, k, xs, y, R, bias=True))),
    ],
)
def test_zennit_matches_reference(toy, zennit_rule, kwargs, rules):
    net, x, t = toy
    theirs = O.zennit_explain(net, x, t, O.zennit_composite(zennit_rule, None, **kwargs))
    mine = ref.propagate(net, x, t, rules, init="output")
    O.assert_close(theirs, mine, cos=0.999999, rel=1e-9, what=zennit_rule)


def test_zennit_zbox_matches_reference(toy):
    import zennit.composites as zc
    import zennit.rules as zr
    from zennit.types import Linear

    net, x, t = toy
    comp = zc.SpecialFirstLayerMapComposite(
        layer_map=zc.layer_map_base() + [(Linear, zr.Epsilon())], first_map=[(Linear, zr.ZBox(low=LO, high=HI))]
    )
    theirs = O.zennit_explain(net, x, t, comp)
    zb = ref.lrp_zbox(LO[0].expand(3, 8, 8).reshape(-1), HI[0].expand(3, 8, 8).reshape(-1))

    def linear(n, k, xs, y, R):
        return zb(n, k, xs, y, R) if n.first else ref.lrp_epsilon(n, k, xs, y, R)

    mine = ref.propagate(net, x, t, {**_zlin(linear)}, init="output")
    O.assert_close(theirs, mine, cos=0.999999, rel=1e-9, what="ZBox")


def test_captum_input_x_gradient_matches_autograd(toy):
    net, x, t = toy
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xx).gather(1, t[:, None]).sum(), xx)
    O.assert_close(O.captum_explain(net, x, t, "InputXGradient"), x * g, cos=0.999999, rel=1e-12)
    O.assert_close(ref.gradient(net, x, t), g, cos=0.999999, rel=1e-12, what="reference gradient")


def test_captum_deeplift_matches_reference(toy):
    net, x, t = toy
    theirs = O.captum_deeplift(net, x, t, maxpool="gradient")
    mine = ref.deeplift(net, x, t, mode="rescale")
    O.assert_close(theirs, mine, cos=0.999999, rel=1e-8, what="DeepLift rescale")
