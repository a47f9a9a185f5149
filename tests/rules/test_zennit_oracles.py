"""Rule files against zennit 0.5 on torchvision VGG-16 and ResNet-50 (seeded random weights, random biases and
BatchNorm statistics, float64, 2 x 3 x 32 x 32): per-sample cosine > 0.9999 and relative error < 1e-5.

zennit runs with its canonizers (VGGCanonizer, ResNetCanonizer: BN merged into the conv before it, residual
`out += identity` turned into a `Sum` module with the z-rule `Norm`); rulelang folds BN itself and sees the
functional add directly, so with the canonizers both sides mean the same model. A single zennit rule
(`Epsilon`, `ZPlus`, ...) is put on every conv and dense layer over zennit's base map (activations Pass,
Sum/AvgPool Norm, BN Pass), which is exactly what the single-rule files say.
"""

import pytest
import torch

from tests.helpers import rule_oracles as O

pytestmark = pytest.mark.slow  # oracle sweeps over torchvision models (fast loop: -m "not slow")

LO = [-2.5, -2.0, -3.0]
HI = [2.5, 3.0, 2.0]


def _t(v):
    return torch.tensor(v, dtype=O.DTYPE).reshape(1, 3, 1, 1)


# (rule file, our params, zennit composite or rule, its kwargs, seed)
CASES = [
    ("lrp-epsilon", {}, "Epsilon", {}, "output"),
    ("lrp-z", {}, "Epsilon", {"epsilon": 1e-9}, "output"),
    ("lrp-zplus", {}, "ZPlus", {}, "output"),
    ("lrp-alpha1-beta0", {}, "AlphaBeta", {"alpha": 1.0, "beta": 0.0}, "output"),
    ("lrp-alpha2-beta1", {}, "AlphaBeta", {"alpha": 2.0, "beta": 1.0}, "output"),
    ("lrp-alpha5-beta4", {}, "AlphaBeta", {"alpha": 5.0, "beta": 4.0}, "output"),
    ("lrp-gamma", {}, "Gamma", {"gamma": 0.25}, "output"),
    ("lrp-flat", {}, "Flat", {}, "output"),
    ("lrp-wsquare", {}, "WSquare", {}, "output"),
    ("lrp-zbox", {"lo": LO, "hi": HI}, "ZBoxFirst", {"low": _t(LO), "high": _t(HI)}, "output"),
    ("lrp-epsilon-plus", {}, "EpsilonPlus", {}, "output"),
    ("lrp-epsilon-plus-flat", {}, "EpsilonPlusFlat", {}, "output"),
    ("lrp-epsilon-alpha2-beta1", {}, "EpsilonAlpha2Beta1", {}, "output"),
    ("lrp-epsilon-alpha2-beta1-flat", {}, "EpsilonAlpha2Beta1Flat", {}, "output"),
    ("lrp-epsilon-gamma-box", {"lo": LO, "hi": HI}, "EpsilonGammaBox", {"low": _t(LO), "high": _t(HI)}, "output"),
    ("lrp-cmp-alpha1-beta0", {}, "CMP", {"alpha": 1.0, "beta": 0.0}, "output"),
    ("lrp-cmp-alpha2-beta1", {}, "CMP", {"alpha": 2.0, "beta": 1.0}, "output"),
    ("excitation-bp", {}, "ExcitationBackprop", {}, "onehot"),
    ("guided-backprop", {}, "GuidedBackprop", {}, "onehot"),
    ("deconvnet", {}, "DeconvNet", {}, "onehot"),
]


def _composite(name, canonizer, kwargs):
    if name == "ZBoxFirst":  # z-box on the first linear layer, epsilon on the others
        import zennit.composites as zc
        import zennit.rules as zr
        from zennit.types import Linear

        return zc.SpecialFirstLayerMapComposite(
            layer_map=zc.layer_map_base() + [(Linear, zr.Epsilon())],
            first_map=[(Linear, zr.ZBox(**kwargs))],
            canonizers=O.canonizers(canonizer),
        )
    if name == "CMP":  # iNNvestigate's sequential presets in zennit terms: alpha-beta on conv, epsilon 1e-10 on dense
        import zennit.composites as zc
        import zennit.rules as zr
        from zennit.types import Convolution

        return zc.LayerMapComposite(
            layer_map=zc.layer_map_base()
            + [(Convolution, zr.AlphaBeta(**kwargs)), (torch.nn.Linear, zr.Epsilon(epsilon=1e-10))],
            canonizers=O.canonizers(canonizer),
        )
    return O.zennit_composite(name, canonizer, **kwargs)


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
@pytest.mark.parametrize("rule, params, zname, zkwargs, seed", CASES, ids=[c[0] for c in CASES])
def test_rule_matches_zennit(models, arch, rule, params, zname, zkwargs, seed):
    model, x, t = models[arch]
    theirs = O.zennit_explain(model, x, t, _composite(zname, arch, zkwargs), seed=seed)
    mine = O.ours(model, rule, x, t, **params)
    O.assert_close(mine, theirs, what=f"{rule} vs zennit {zname} on {arch}")


def test_zennit_without_canonizer_duplicates_relevance_at_adds(resnet):
    """Documented difference: without ResNetCanonizer zennit cannot see torchvision's functional `out += identity`
    and gives it the gradient, copying R into both branches; rulelang always splits it (z-rule). So our
    lrp-epsilon equals zennit *with* the canonizer and differs from zennit without it."""
    model, x, t = resnet
    mine = O.ours(model, "lrp-epsilon", x, t)
    with_canon = O.zennit_explain(model, x, t, O.zennit_composite("Epsilon", "resnet"))
    # without ResNetCanonizer, BN must still be merged for a like-for-like comparison
    without = O.zennit_explain(model, x, t, O.zennit_composite("Epsilon", "vgg"))
    O.assert_close(mine, with_canon)
    m = O.compare(mine, without)
    assert m["rel"] > 1e-2, m


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_excitation_bp_is_seeded_with_the_one_hot_on_a_negative_logit(models, arch):
    """Excitation BP's top-down signal is a probability (Zhang et al.): the explained class gets 1, not its logit.
    On the class with the most negative logit a logit seed would flip the map's sign (cosine -1); the one-hot seed
    agrees with zennit's ExcitationBackprop seeded with the one-hot, sample by sample."""
    model, x, _ = models[arch]
    with torch.no_grad():
        logits = model(x)
    t = logits.argmin(1)
    assert (logits.gather(1, t[:, None]) < 0).all()  # the case that used to flip
    theirs = O.zennit_explain(model, x, t, O.zennit_composite("ExcitationBackprop", arch), seed="onehot")
    mine = O.ours(model, "excitation-bp", x, t)
    O.assert_close(mine, theirs, what=f"excitation-bp vs zennit ExcitationBackprop (one-hot) on {arch}")
