"""Oracles for the rule library: zennit and captum run on the same model and input as a rulelang explainer.

Everything that touches zennit or captum lives here, so each test reads as "our file vs their composite".

Conventions (shared with rulelang's rule files):

* seeds — LRP-type rules start from `y * target` (the explained logit's value, zero elsewhere); zennit gets the
  same through `attr_output = output * onehot`. Gradient-type rules (guided BP, deconvnet, gradient×input,
  DeepLIFT) start from the one-hot `target`.
* the user's model is never handed to zennit: zennit's canonizers and parameter modifiers edit a module in place,
  so every oracle runs on a deep copy.
* models are torchvision's VGG-16 and ResNet-50 with seeded random weights, random biases and random BatchNorm
  statistics (so bias and BN handling are exercised), in float64, on small inputs. VGG-16's classifier is
  narrowed (25088→64→64→10 instead of 25088→4096→4096→1000): same op sequence, a few hundred MB less memory.
"""

from __future__ import annotations

import copy

import torch
import torchvision

DTYPE = torch.float64


# ------------------------------------------------------------------------------------------------------ models
def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random biases and BN statistics on top of torchvision's seeded default init."""
    from rulelang.testing.models import randomize_

    return randomize_(model, seed)


def vgg16(seed: int = 0, classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.vgg16(weights=None)
    model.classifier = torch.nn.Sequential(
        torch.nn.Linear(512 * 7 * 7, 64),
        torch.nn.ReLU(True),
        torch.nn.Dropout(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(True),
        torch.nn.Dropout(),
        torch.nn.Linear(64, classes),
    )
    # torchvision's init for the new classifier (normal(0, 0.01) is too small to keep logits away from zero)
    for m in model.classifier.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
    return _randomize(model, seed).to(DTYPE).eval()


def resnet50(seed: int = 0, classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.resnet50(weights=None, num_classes=classes)
    return _randomize(model, seed).to(DTYPE).eval()


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Signed inputs like normalised images (the first layer sees negative values)."""
    g = torch.Generator().manual_seed(seed + 100)
    return torch.randn(n, 3, size, size, generator=g, dtype=DTYPE)


def labels(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


# ----------------------------------------------------------------------------------------------------- metrics
def compare(ours: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Worst per-sample cosine similarity and worst per-sample relative L2 error (|a - b| / |b|)."""
    a = ours.detach().reshape(ours.shape[0], -1).to(DTYPE)
    b = ref.detach().reshape(ref.shape[0], -1).to(DTYPE)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    rel = (a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-300)
    return {"cos": float(cos.min()), "rel": float(rel.max())}


def assert_close(
    ours: torch.Tensor, ref: torch.Tensor, cos: float = 0.9999, rel: float = 1e-5, what: str = ""
) -> dict[str, float]:
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs oracle {tuple(ref.shape)}"
    assert torch.isfinite(ours).all(), f"{what}: non-finite attribution"
    m = compare(ours, ref)
    assert m["cos"] > cos and m["rel"] < rel, f"{what}: cosine {m['cos']:.8f}, relative error {m['rel']:.3e}"
    return m


# --------------------------------------------------------------------------------------------------- rulelang
def ours(model: torch.nn.Module, rule: str, x: torch.Tensor, target: torch.Tensor, **params) -> torch.Tensor:
    import rulelang

    explainer = rulelang.compile(model, rule, example_input=x, **params)
    return explainer(x, target=target)


# ------------------------------------------------------------------------------------------------------ zennit
def _onehot(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(target, out.shape[1]).to(out)


def canonizers(kind: str | None):
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    return {"vgg": [VGGCanonizer()], "resnet": [ResNetCanonizer()], None: []}[kind]


def zennit_composite(name: str, canonizer: str | None, **kwargs):
    """A zennit composite by class name (`EpsilonPlus`, ...), or a single rule (`Epsilon`, `ZPlus`, ...) put on
    every linear layer (conv and dense) with zennit's base map elsewhere (ReLU pass, sum/avg-pool Norm, BN pass)."""
    import zennit.composites as zc
    import zennit.rules as zr
    from zennit.core import Composite
    from zennit.types import Linear

    cans = canonizers(canonizer)
    if isinstance(getattr(zc, name, None), type) and issubclass(getattr(zc, name), Composite):
        return getattr(zc, name)(canonizers=cans, **kwargs)
    rule = getattr(zr, name)(**kwargs)
    stab = kwargs.get("stabilizer", kwargs.get("epsilon", 1e-6))
    return zc.LayerMapComposite(layer_map=zc.layer_map_base(stab) + [(Linear, rule)], canonizers=cans)


def zennit_explain(
    model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, composite, seed: str = "output"
) -> torch.Tensor:
    """Attribution of `composite` on a copy of `model`; `seed` is "output" (y * onehot) or "onehot"."""
    model = copy.deepcopy(model).eval()
    x = x.detach().clone().requires_grad_(True)
    with composite.context(model) as modified:
        _exact_identity_batchnorms(modified)
        out = modified(x)
        grad_out = _onehot(out, target) * (out if seed == "output" else 1)
        (attr,) = torch.autograd.grad(out, x, grad_outputs=grad_out.detach())
    return attr.detach()


def _exact_identity_batchnorms(model: torch.nn.Module) -> None:
    """zennit 0.5's MergeBatchNorm folds a BN into the conv before it and resets the BN to mean 0, var 1, weight 1,
    bias 0, but keeps its eps: the "identity" left behind computes x / sqrt(1 + eps), a 5e-6 shrink per BN
    (~1e-4 over ResNet-50's forward; far more in eps-rule denominators near zero). Zero the eps of merged BNs
    (zennit 1.0 does the same) so that zennit explains the model it was given."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            merged = (
                bool((m.running_mean == 0).all())
                and bool((m.running_var == 1).all())
                and bool((m.weight == 1).all())
                and bool((m.bias == 0).all())
            )
            if merged:
                m.eps = 0.0


def zennit_grad_times_input(model, x, target, composite, seed="onehot") -> torch.Tensor:
    return x * zennit_explain(model, x, target, composite, seed=seed)


# ------------------------------------------------------------------------------------------------------ captum
def captum_explain(
    model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, **kwargs
) -> torch.Tensor:
    """`method` is a captum.attr class name: InputXGradient, GuidedBackprop, Deconvolution, DeepLift."""
    import captum.attr as ca

    model = copy.deepcopy(model).eval()
    algo = getattr(ca, method)(model)
    x = x.detach().clone().requires_grad_(True)
    return algo.attribute(x, target=target, **kwargs).detach()


def captum_deeplift(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    baseline: torch.Tensor | None = None,
    maxpool: str = "gradient",
) -> torch.Tensor:
    """captum DeepLift (Rescale). `maxpool="gradient"` routes through the forward switches as the deeplift package
    (and the paper) do; `maxpool="captum"` keeps captum's own cross-max rule for max-pooling."""
    import captum.attr._core.deep_lift as dl

    baseline = torch.zeros_like(x) if baseline is None else baseline
    saved = dict(dl.SUPPORTED_NON_LINEAR)
    try:
        if maxpool == "gradient":
            for k in [torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d]:
                dl.SUPPORTED_NON_LINEAR.pop(k, None)
        return captum_explain(model, x, target, "DeepLift", baselines=baseline)
    finally:
        dl.SUPPORTED_NON_LINEAR.clear()
        dl.SUPPORTED_NON_LINEAR.update(saved)
