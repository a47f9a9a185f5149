"""AttnLRP and CP-LRP (rules/attn-lrp.yaml, rules/cp-lrp.yaml) and the transformer rules of the LRP composites.

- Oracle: LXT 2.x's own rule functions (identity rule, LayerNorm with std held constant, gradient division / stop
  at the attention inputs), applied the way LXT patches torchvision's VisionTransformer, on a small random ViT in
  float64: cosine >= 0.999 per sample.
- Conservation (hypothesis): CP-LRP on random bias-free transformer encoders, AttnLRP and LRP-epsilon on random
  bias-free gated / bilinear token mixers: the input relevance sums to the seed.
- Closed-form toy cases for each new rule: norm with its scale held constant, softmax linearisation, uniform
  rule on `a * b` and `A @ B`, CP-LRP's constant attention weights, layer scale, functional batch norm folding.
- Text: an embedding front end is explained at the embedding output (relevance per token = sum over features).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given
from hypothesis import strategies as st
from lxt.efficient.patches import layer_norm_forward
from lxt.efficient.rules import divide_gradient, identity_rule_implicit, stop_gradient
from torch import nn

import rulelang
from rulelang.testing.models import randomize_

D = torch.float64
TINY = 1e-12  # LXT divides by nothing: rulelang's stabiliser set negligible for the comparison


# ------------------------------------------------------------------------------------------------ the LXT oracle
class _LxtIdentity(nn.Module):
    """An element-wise nonlinearity under LXT's identity rule (gradient f(x)/x)."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return identity_rule_implicit(self.act, x)


class _LxtLayerNorm(nn.Module):
    """LXT's LayerNorm: the standard deviation detached (identity rule on norms)."""

    def __init__(self, ln: nn.LayerNorm) -> None:
        super().__init__()
        self.ln = ln

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm_forward(self.ln, x)


class _LxtAttention(nn.Module):
    """nn.MultiheadAttention with LXT's attention rule: CP-LRP detaches query and key (lxt vit_torch); AttnLRP
    divides the query and key gradients by 4 and the value's by 2 (lxt patches.wrap_attention_forward)."""

    def __init__(self, mha: nn.MultiheadAttention, mode: str) -> None:
        super().__init__()
        self.mha, self.mode = mha, mode

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs):
        if self.mode == "cp":
            q, k = stop_gradient(q), stop_gradient(k)
        else:
            q, k, v = divide_gradient(q, 4), divide_gradient(k, 4), divide_gradient(v, 2)
        return self.mha(q, k, v, **kwargs)


def lxt_model(model: nn.Module, mode: str) -> nn.Module:
    """A copy of `model` with LXT's rules in place of GELU, LayerNorm and MultiheadAttention."""
    model = copy.deepcopy(model)
    for name, m in list(model.named_modules()):
        new = None
        if isinstance(m, nn.GELU):
            new = _LxtIdentity(m)
        elif isinstance(m, nn.LayerNorm):
            new = _LxtLayerNorm(m)
        elif isinstance(m, nn.MultiheadAttention):
            new = _LxtAttention(m, mode)
        if new is not None:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, new)
    return model


def lxt_relevance(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LXT's relevance: input times the modified gradient. The gradient is seeded with 1, so that the output's
    relevance is the target logit y (rulelang's `init: y * target`); LXT's README seeds it with y, which scales
    the whole map by y."""
    x = x.clone().requires_grad_(True)
    y = model(x)[torch.arange(len(x)), target]
    (g,) = torch.autograd.grad(y.sum(), x)
    return (x * g).detach()


def small_vit(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=10
    )
    randomize_(model, seed)
    nn.init.normal_(model.heads.head.weight, std=0.2)  # torchvision initialises the head to zero
    return model.to(D).eval()


@pytest.mark.parametrize("rule, mode", [("attn-lrp", "attn"), ("cp-lrp", "cp")])
def test_lxt_oracle_on_torchvision_vit(rule: str, mode: str) -> None:
    model = small_vit()
    x = torch.randn(3, 3, 32, 32, dtype=D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = model(x).argmax(1)
    ref = lxt_relevance(lxt_model(model, mode), x, target)
    ours = rulelang.compile(model, rule, example_input=x, eps=TINY)(x, target)
    assert ref.abs().sum() > 0
    cos = F.cosine_similarity(ours.flatten(1), ref.flatten(1), dim=1)
    assert (cos >= 0.999).all(), f"{rule} vs LXT: cosine {cos.tolist()}"
    rel = ((ours - ref).norm() / ref.norm()).item()  # LXT's identity rule adds 1e-10 to x: not exactly 0
    assert rel < 1e-6, f"{rule} vs LXT: relative error {rel:.2e}"


def test_attn_and_cp_lrp_differ_on_a_vit() -> None:
    """The two rule sets are not the same method: their maps differ on a random ViT."""
    model = small_vit(seed=2)
    x = torch.randn(2, 3, 32, 32, dtype=D)
    a = rulelang.compile(model, "attn-lrp", example_input=x)(x, 0)
    c = rulelang.compile(model, "cp-lrp", example_input=x)(x, 0)
    assert (F.cosine_similarity(a.flatten(1), c.flatten(1), dim=1) < 0.9999).all()


# ------------------------------------------------------------------------------------------------- conservation
class Encoder(nn.Module):
    """Bias-free transformer encoder on token inputs (N, T, d), mean-pooled, bias-free head."""

    def __init__(self, d: int, heads: int, layers: int, norm_first: bool, activation: str, classes: int = 3) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d, heads, 2 * d, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first, bias=False
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(1))


class Mixer(nn.Module):
    """Bias-free token mixer with a GELU-gated MLP (`a * b`) and a softmax-free attention (`(Q Kᵀ) V`)."""

    def __init__(self, d: int, classes: int = 3) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d, bias=False)
        self.gate, self.up, self.down = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.head = nn.Linear(d, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x)
        gated = self.down(F.gelu(self.gate(z)) * self.up(z))
        mixed = torch.matmul(torch.matmul(self.q(z), self.k(z).transpose(-2, -1)) * 0.25, self.v(z))
        return self.head((x + gated + mixed).mean(1))


def _seed_sum(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    with torch.no_grad():
        return model(x)[:, target]


@given(
    d=st.sampled_from([4, 8]),
    heads=st.sampled_from([1, 2]),
    layers=st.integers(1, 2),
    norm_first=st.booleans(),
    activation=st.sampled_from(["gelu", "relu"]),
    seed=st.integers(0, 2**16),
)
def test_cp_lrp_conserves_on_bias_free_encoders(d, heads, layers, norm_first, activation, seed) -> None:
    torch.manual_seed(seed)
    model = Encoder(d, heads, layers, norm_first, activation).to(D).eval()
    x = torch.randn(2, 3, d, dtype=D)
    r = rulelang.compile(model, "cp-lrp", example_input=x, eps=TINY)(x, 1)
    torch.testing.assert_close(r.sum((1, 2)), _seed_sum(model, x, 1), rtol=1e-6, atol=1e-9)


@given(d=st.sampled_from([4, 6]), seed=st.integers(0, 2**16), rule=st.sampled_from(["attn-lrp", "lrp-epsilon"]))
def test_uniform_rule_conserves_on_bias_free_mixers(d, seed, rule) -> None:
    torch.manual_seed(seed)
    model = Mixer(d).to(D).eval()
    x = torch.randn(2, 3, d, dtype=D)
    r = rulelang.compile(model, rule, example_input=x, eps=TINY)(x, 0)
    torch.testing.assert_close(r.sum((1, 2)), _seed_sum(model, x, 0), rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------------------------- toy cases
class Fn(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def explain(model: nn.Module, rule: str, x: list[float], target: int = 0) -> torch.Tensor:
    t = torch.tensor([x], dtype=D)
    return rulelang.compile(model.to(D).eval(), rule, example_input=t, eps=TINY)(t, target)[0]


@pytest.mark.parametrize("rule", ["attn-lrp", "cp-lrp", "lrp-epsilon-plus", "lrp-zplus"])
def test_layer_norm_with_constant_scale(rule: str) -> None:
    """LayerNorm(2) without bias, eps 0, x = (1, 3): mean 2, std 1, y = (-1, 1); target 1 seeds R = (0, 1), so
    R / y = (0, 1); centred: (-1/2, 1/2); times x: (-1/2, 3/2). The true gradient would give (0, 0)."""
    ln = nn.LayerNorm(2, eps=0.0, bias=False)
    r = explain(nn.Sequential(ln), rule, [1.0, 3.0], target=1)
    torch.testing.assert_close(r, torch.tensor([-0.5, 1.5], dtype=D), rtol=1e-9, atol=1e-9)


def test_softmax_linearisation() -> None:
    """softmax(0, ln 3) = (1/4, 3/4); target 1 seeds R = (0, 3/4); x * (R - s * sum R) = (0, ln 3 * 3/16).
    CP-LRP holds the softmax constant: nothing reaches its input."""
    x = [0.0, math.log(3.0)]
    r = explain(nn.Sequential(nn.Softmax(dim=1)), "attn-lrp", x, target=1)
    torch.testing.assert_close(r, torch.tensor([0.0, x[1] * 3 / 16], dtype=D), rtol=1e-9, atol=1e-12)
    r = explain(nn.Sequential(nn.Softmax(dim=1)), "cp-lrp", x, target=1)
    assert (r == 0).all()


@pytest.mark.parametrize("rule", ["attn-lrp", "cp-lrp", "lrp-epsilon", "lrp-epsilon-plus", "lrp-alpha2-beta1"])
def test_uniform_rule_on_a_gate(rule: str) -> None:
    """y = a * b with a = 2, b = 3: each factor gets half of R = 6 (CP-LRP keeps the uniform rule on `mul`)."""
    r = explain(Fn(lambda x: x[:, :1] * x[:, 1:]), rule, [2.0, 3.0])
    torch.testing.assert_close(r, torch.tensor([3.0, 3.0], dtype=D), rtol=1e-9, atol=1e-9)


def _matmul(x: torch.Tensor) -> torch.Tensor:
    return torch.matmul(x[:, :2].reshape(-1, 1, 2), x[:, 2:].reshape(-1, 2, 1)).reshape(-1, 1)


def test_matmul_uniform_and_cp() -> None:
    """A = (1, 2), B = (3, 4)ᵀ: Z = 11. AttnLRP: R_A = A ⊙ (B · R/Z) / 2 = (1.5, 4), R_B = (1.5, 4). CP-LRP: neither
    factor is a gate (no softmax or sigmoid behind it), so it splits uniformly too: the same (sum 11). Giving both
    factors their full share, (3, 8), (3, 8), would count R twice (sum 22)."""
    x = [1.0, 2.0, 3.0, 4.0]
    for rule in ("attn-lrp", "cp-lrp"):
        r = explain(Fn(_matmul), rule, x)
        torch.testing.assert_close(r, torch.tensor([1.5, 4.0, 1.5, 4.0], dtype=D), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------- CP-LRP on gates (issue 14): the gate is constant
def _times(gate):
    return lambda x: x[:, :1] * gate(x[:, 1:])


class ModuleGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * self.gate(x[:, 1:])


@pytest.mark.parametrize(
    "model",
    [
        Fn(_times(torch.sigmoid)),
        ModuleGate(),
        Fn(_times(F.hardsigmoid)),
        Fn(lambda x: torch.sigmoid(x[:, 1:]) * x[:, :1]),  # the gate first
    ],
    ids=["sigmoid", "nn.Sigmoid", "hardsigmoid", "gate-first"],
)
def test_cp_lrp_holds_a_squeeze_excitation_gate_constant(model: nn.Module) -> None:
    """y = a * g(b) with a = 2, b = 0: g(0) = 1/2 (sigmoid and hardsigmoid), y = 1 = R. CP-LRP holds the gate
    constant: a gets all of R, b nothing: (1, 0). AttnLRP's uniform rule: (1/2, 1/2) (the gate's half passes the
    identity rule at g)."""
    r = explain(model, "cp-lrp", [2.0, 0.0])
    torch.testing.assert_close(r, torch.tensor([1.0, 0.0], dtype=D), rtol=1e-9, atol=1e-12)
    r = explain(model, "attn-lrp", [2.0, 0.0])
    torch.testing.assert_close(r, torch.tensor([0.5, 0.5], dtype=D), rtol=1e-9, atol=1e-12)


def test_cp_lrp_on_glu_gates_and_on_two_gates() -> None:
    """y = a * silu(b), a = 2, b = 1: y = 2 silu(1). The SiLU factor is the gate (an element-wise nonlinearity
    against a plain signal): (y, 0). Two sigmoid factors, neither singled out: each gets y / 2."""
    y = 2.0 * F.silu(torch.tensor(1.0, dtype=D))
    r = explain(Fn(_times(F.silu)), "cp-lrp", [2.0, 1.0])
    torch.testing.assert_close(r, torch.stack([y, torch.zeros((), dtype=D)]), rtol=1e-9, atol=1e-12)
    y2 = torch.sigmoid(torch.tensor(2.0, dtype=D)) * 0.5
    r = explain(Fn(lambda x: torch.sigmoid(x[:, :1]) * torch.sigmoid(x[:, 1:])), "cp-lrp", [2.0, 0.0])
    torch.testing.assert_close(r, torch.stack([y2 / 2, y2 / 2]), rtol=1e-9, atol=1e-12)


def _attention_product(x: torch.Tensor) -> torch.Tensor:
    a = torch.softmax(x[:, :2], -1).reshape(-1, 1, 2)
    return torch.matmul(a, x[:, 2:].reshape(-1, 2, 1)).reshape(-1, 1)


def test_cp_lrp_gives_a_softmax_gated_product_to_the_values() -> None:
    """A = softmax(0, ln 3) = (1/4, 3/4), V = (1, 2): y = 7/4 = R. CP-LRP: the scores get nothing, the values
    V ⊙ A = (1/4, 3/2) (sum 7/4: conserved)."""
    r = explain(Fn(_attention_product), "cp-lrp", [0.0, math.log(3.0), 1.0, 2.0])
    torch.testing.assert_close(r, torch.tensor([0.0, 0.0, 0.25, 1.5], dtype=D), rtol=1e-9, atol=1e-12)


class GatedNet(nn.Module):
    """Bias-free conv, then a gated block, global mean, bias-free head: `se` (torchvision's SqueezeExcitation,
    biases in the gate branch, sigmoid or hardsigmoid), `glu` (a * sigmoid(b)), `swiglu` (a * silu(b)), `mixer`
    (1x1-conv queries/keys/values multiplied without a softmax: q·kᵀ and (q·kᵀ)·v have no gate)."""

    def __init__(self, c: int, gate: str, hard: bool) -> None:
        super().__init__()
        self.gate = gate
        self.conv = nn.Conv2d(3, c, 3, padding=1, bias=False)
        act = nn.Hardsigmoid if hard else nn.Sigmoid
        self.se = torchvision.ops.SqueezeExcitation(c, 2, scale_activation=act)
        self.a, self.b, self.v = (nn.Conv2d(c, c, 1, bias=False) for _ in range(3))
        self.head = nn.Linear(c, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if self.gate == "se":
            h = self.se(h)
        elif self.gate == "glu":
            h = self.a(h) * torch.sigmoid(self.b(h))
        elif self.gate == "swiglu":
            h = self.a(h) * F.silu(self.b(h))
        else:
            q, k, v = (m(h).flatten(2) for m in (self.a, self.b, self.v))  # (N, c, HW)
            h = h + torch.matmul(torch.matmul(q, k.transpose(1, 2)) * 0.1, v).reshape(h.shape)
        return self.head(h.mean((2, 3)))


@given(
    gate=st.sampled_from(["se", "glu", "swiglu", "mixer"]),
    hard=st.booleans(),
    c=st.sampled_from([2, 4]),
    seed=st.integers(0, 2**16),
)
def test_cp_lrp_conserves_on_gated_blocks(gate: str, hard: bool, c: int, seed: int) -> None:
    """Sum of input relevance = the seed on bias-free gated blocks (the SE gate's own biases take nothing: the gate
    is a constant). Before the gate was held constant, a product of two activations without a softmax gave both
    factors their full share: `mixer` counted R more than once."""
    torch.manual_seed(seed)
    model = GatedNet(c, gate, hard).to(D).eval()
    randomize_(model.se, seed)
    x = torch.randn(2, 3, 4, 4, dtype=D)
    r = rulelang.compile(model, "cp-lrp", example_input=x, eps=TINY)(x, 1)
    torch.testing.assert_close(r.sum((1, 2, 3)), _seed_sum(model, x, 1), rtol=1e-6, atol=1e-9)


class LayerScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.tensor([2.0, 3.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


@pytest.mark.parametrize("rule", ["attn-lrp", "lrp-epsilon-plus", "lrp-zplus"])
def test_layer_scale_passes_relevance(rule: str) -> None:
    """x * gamma (a product with a parameter): y = (2, -6); target 1 seeds R = (0, -6), passed unchanged."""
    r = explain(LayerScale(), rule, [1.0, -2.0], target=1)
    torch.testing.assert_close(r, torch.tensor([0.0, -6.0], dtype=D), rtol=1e-9, atol=1e-9)


class ConvBN(nn.Module):
    """conv + batch norm, as a module or as timm's functional F.batch_norm call."""

    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.functional = functional
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.functional:
            bn = self.bn
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.1, bn.eps)
        else:
            x = self.bn(x)
        return self.fc(F.relu(x).flatten(1))


@pytest.mark.parametrize("rule", ["lrp-epsilon-plus", "lrp-alpha2-beta1", "gradient"])
def test_functional_batch_norm_folds_like_the_module(rule: str) -> None:
    torch.manual_seed(0)
    module = randomize_(ConvBN(functional=False)).to(D).eval()
    functional = copy.deepcopy(module)
    functional.functional = True
    x = torch.randn(2, 2, 4, 4, dtype=D)
    ex = rulelang.compile(functional, rule, example_input=x)
    assert any("folded" in op.target for op in ex.graph.ops), "F.batch_norm was not folded into the conv"
    expect = rulelang.compile(module, rule, example_input=x)(x, 1)
    torch.testing.assert_close(ex(x, 1), expect, rtol=1e-9, atol=1e-12)


def test_vjp_frozen_on_a_norm_without_a_fixed_scale_is_a_located_error() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.LocalResponseNorm(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 2))
    x = torch.randn(1, 3, 2, 2)
    with pytest.raises(rulelang.RulelangError, match=r"attn-lrp\.yaml:\d+.*\n?.*vjp_frozen"):
        rulelang.compile(model, "attn-lrp", example_input=x)(x, 0)


# ---------------------------------------------------------------------------------------------------- text
class TextClassifier(nn.Module):
    """Token ids -> embeddings -> nn.TransformerEncoder -> mean -> logits; `classify` takes the embeddings."""

    def __init__(self, vocab: int = 30, d: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(embeddings).mean(1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embedding(tokens))


class Body(nn.Module):
    """The part of the classifier after the embedding (what rulelang explains)."""

    def __init__(self, model: TextClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.model.classify(embeddings)


def test_text_classifier_explained_at_the_embedding_output() -> None:
    torch.manual_seed(0)
    model = TextClassifier().to(D).eval()
    tokens = torch.randint(0, 30, (2, 7))
    with pytest.raises(rulelang.RulelangError, match="embeddings"):
        rulelang.compile(model, "attn-lrp", example_input=tokens)
    fast_path = torch.backends.mha.get_fastpath_enabled()
    emb = model.embedding(tokens).detach()
    explainer = rulelang.compile(Body(model), "attn-lrp", example_input=emb)
    assert torch.backends.mha.get_fastpath_enabled() == fast_path  # restored after tracing
    kinds = {str(op.kind) for op in explainer.graph.ops}
    assert {"matmul", "softmax", "norm"} <= kinds, "the encoder's attention was not traced as its parts"
    per_token = explainer(emb, target=1).sum(-1)  # relevance per token
    assert per_token.shape == tokens.shape and torch.isfinite(per_token).all() and per_token.abs().sum() > 0
    grad = rulelang.compile(Body(model), "gradient", example_input=emb)(emb, 1)
    e = emb.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(model.classify(e)[:, 1].sum(), e)
    torch.testing.assert_close(grad, ref, rtol=1e-9, atol=1e-12)
