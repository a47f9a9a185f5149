"""The Explainer API: targets, keep/propagate, dtypes, fail-closed matching, errors, and no mutation of the
user's model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import rulelang
from rulelang.errors import CompileError, ExplainError, RuleError
from tests.helpers.models import FunctionalNet, SmallCNN, randomize_bn


def autograd_grad(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    out = model(x)
    idx = (
        torch.as_tensor(target).expand(len(x)) if not isinstance(target, torch.Tensor) or target.dim() == 0 else target
    )
    (g,) = torch.autograd.grad(out[torch.arange(len(x)), idx].sum(), x)
    return g


@pytest.fixture
def fnet():
    torch.manual_seed(0)
    model = randomize_bn(FunctionalNet()).double().eval()
    return model, torch.randn(3, 3, 16, 16, dtype=torch.float64)


def test_functional_model_gradient(fnet) -> None:
    model, x = fnet
    explainer = rulelang.compile(model, "gradient", example_input=x)
    assert torch.allclose(explainer(x, target=2), autograd_grad(model, x, 2), rtol=1e-9, atol=1e-12)


def test_module_called_twice_is_two_nodes(fnet) -> None:
    model, x = fnet
    plan = rulelang.compile(model, "gradient", example_input=x).plan
    relu_module_nodes = [r.op for r in plan.rows if r.op.module == "relu" and r.op.kind == "relu"]
    assert len(relu_module_nodes) == 2
    assert {op.name for op in relu_module_nodes} == {"relu", "relu_1"}
    folded = [r.op for r in plan.rows if r.op.fold is not None]
    assert [op.name for op in folded] == ["conv2"]  # the BatchNorm after conv2 is folded into it


@pytest.mark.parametrize("target", [1, torch.tensor(1), torch.tensor([0, 4, 2]), None])
def test_target_forms(fnet, target) -> None:
    model, x = fnet
    explainer = rulelang.compile(model, "gradient", example_input=x)
    expected_target = model(x).argmax(1) if target is None else target
    assert torch.allclose(explainer(x, target=target), autograd_grad(model, x, expected_target), atol=1e-12)


def test_out_of_range_target_is_a_clear_error(fnet) -> None:
    model, x = fnet
    explainer = rulelang.compile(model, "gradient", example_input=x)
    with pytest.raises(ExplainError, match="out of range"):  # a run-time error, not a compile error
        explainer(x, target=5)


def test_explain_keep_all_and_propagate(fnet) -> None:
    model, x = fnet
    explainer = rulelang.compile(model, "gradient", example_input=x)
    result = explainer.explain(x, target=1, keep="all")
    assert torch.allclose(result.output, model(x))
    assert set(result.relevances) == set(explainer.nodes)
    # relevance at the logits is the one-hot seed; at `fc`'s input it is W^T e_1
    assert torch.equal(result.relevances["fc"], torch.nn.functional.one_hot(torch.tensor([1] * 3), 5).double())
    # propagate: inject r at conv3's output; compare with autograd of <conv3(x), r>
    r = torch.randn(3, 6, 8, 8, dtype=torch.float64)
    lower = explainer.propagate(x, at="conv3", relevance=r, keep="all")
    xr = x.clone().requires_grad_(True)
    feats = {}
    handle = model.conv3.register_forward_hook(lambda m, i, o: feats.setdefault("o", o))
    model(xr)
    handle.remove()
    (g,) = torch.autograd.grad((feats["o"] * r).sum(), xr)
    assert torch.allclose(lower.attribution, g, atol=1e-12)
    assert "fc" not in lower.relevances and "conv1" in lower.relevances


def test_float32_agrees_with_float64() -> None:
    torch.manual_seed(1)
    model64 = SmallCNN().double().eval()
    model32 = copy.deepcopy(model64).float()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    for rule in ["gradient", "lrp-epsilon", "lrp-zplus"]:
        a64 = rulelang.compile(model64, rule, example_input=x)(x, target=1)
        a32 = rulelang.compile(model32, rule, example_input=x.float())(x.float(), target=1)
        assert a32.dtype == torch.float32
        cos = torch.nn.functional.cosine_similarity(a32.double().flatten(1), a64.flatten(1)).min()
        assert cos > 0.9999, rule


def _state(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
        [m.training for m in model.modules()],
        [(dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks)) for m in model.modules()],
        [type(m) for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
    )


def test_user_model_is_not_mutated() -> None:
    torch.manual_seed(2)
    model = randomize_bn(FunctionalNet()).double()
    model.train()  # also in training mode: BatchNorm statistics must not move, the flag must stay
    model.fc.register_full_backward_hook(lambda m, gi, go: None)  # forward hooks are refused (test_bad_inputs)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    before = _state(model)
    for rule in ["gradient", "lrp-epsilon"]:
        try:
            explainer = rulelang.compile(model, rule, example_input=x)
        except CompileError:
            continue  # lrp-epsilon has no rule for the scalar multiply: fail closed, model untouched
        explainer(x, target=0)
        explainer.explain(x, keep="all")
    after = _state(model)
    assert before[1:] == after[1:]
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])


def test_weight_changes_after_compiling_are_reflected() -> None:
    torch.manual_seed(3)
    model = SmallCNN().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    explainer = rulelang.compile(model, "gradient", example_input=x)
    before = explainer(x, target=0)
    with torch.no_grad():
        model[7].weight.normal_()  # cascading randomization does exactly this
    after = explainer(x, target=0)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, autograd_grad(model, x, 0), atol=1e-12)


def _compile_error(tmp_path: Path, error: type, text: str) -> Exception:
    """The error compiling SmallCNN with a rule file holding `text` (a header is prepended)."""
    rule = tmp_path / "rule.yaml"
    rule.write_text("rulelang: 1\nsummary: a rule for one test\n" + text)
    with pytest.raises(error) as err:
        rulelang.compile(SmallCNN().eval(), str(rule), example_input=torch.randn(1, 3, 16, 16))
    assert str(rule) in str(err.value)
    return err.value


def test_unmatched_nodes_fail_closed(tmp_path: Path) -> None:
    message = str(_compile_error(tmp_path, CompileError, "rules:\n  - match: linear\n    relevance: vjp(R)\n"))
    for node in ["_1", "_2", "_4", "_5", "_6", "_8", "_9"]:  # relu, maxpool, flatten, dropout nodes
        assert f"\n  {node}: kind" in message
    assert "kind `relu`" in message and "kind `maxpool`" in message and "default:" in message


def test_shape_error_in_body_reported_at_rule_line(tmp_path: Path) -> None:
    err = _compile_error(
        tmp_path,
        RuleError,
        "default: vjp(R)\nrules:\n  - match: dense\n    relevance: |\n      z = R * w\n      vjp(z)\n",
    )  # w: wrong shape
    assert err.line == 7 and err.path == str(tmp_path / "rule.yaml")


def test_untraceable_model_gets_a_clear_error() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.fc(x)
            return -self.fc(x)

    with pytest.raises(CompileError, match="(?s)cannot trace Branchy.*leaf_modules"):
        rulelang.compile(Branchy(), "gradient", example_input=torch.randn(1, 4))


def test_several_outputs_or_inputs_get_a_clear_error() -> None:
    class TwoOut(nn.Module):
        def forward(self, x):
            return x.relu(), x.sigmoid()

    class TwoIn(nn.Module):
        def forward(self, x, y):
            return x + y

    with pytest.raises(CompileError, match="several outputs"):
        rulelang.compile(TwoOut(), "gradient", example_input=torch.randn(1, 4))
    with pytest.raises(CompileError, match="2 inputs"):
        rulelang.compile(TwoIn(), "gradient", example_input=torch.randn(1, 4))


@pytest.mark.parametrize("leaf", [nn.Sequential, "0"])
def test_leaf_modules_are_one_node(leaf) -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Flatten(), nn.Linear(4 * 14 * 14, 3))
    x = torch.randn(2, 3, 16, 16)
    explainer = rulelang.compile(model, "gradient", example_input=x, leaf_modules=[leaf])
    assert explainer.nodes == ["_0", "_1", "_2"]
    assert [r.op.kind for r in explainer.plan.rows] == ["other", "reshape", "dense"]
    assert torch.allclose(explainer(x, target=1), autograd_grad(model, x, 1), atol=1e-6)


def test_plan_and_code_are_printable(fnet) -> None:
    model, x = fnet
    explainer = rulelang.compile(model, "gradient", example_input=x)
    text = str(explainer.plan)
    assert "conv2" in text and "BatchNorm2d bn (folded)" in text and "default" in text
    code = explainer.code
    assert "def forward(self, x, target = None)" in code and "convolution_backward" not in code or "conv_vjp" in code


def test_torch_compile() -> None:
    torch.manual_seed(4)
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    explainer = rulelang.compile(model, "lrp-epsilon", example_input=x)
    compiled = torch.compile(explainer, backend="aot_eager")
    assert torch.allclose(compiled(x, target=1), explainer(x, target=1), atol=1e-6)


@pytest.mark.parametrize("rule", ["lrp-zplus", "lrp-alpha2-beta1", "lrp-epsilon-plus-flat"])
def test_cached_parameters_agree_and_follow_weight_changes(rule) -> None:
    torch.manual_seed(6)
    model = (
        randomize_bn(
            nn.Sequential(
                nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 7 * 7, 3)
            )
        )
        .double()
        .eval()
    )
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    plain = rulelang.compile(model, rule, example_input=x, cache_parameters=False)  # the cache is the default
    assert "bn_scale" in plain.code  # the folded BatchNorm is among what gets hoisted
    cached = rulelang.compile(model, rule, example_input=x, cache_parameters=True)
    assert "computed once per parameter change" in cached.code
    assert torch.allclose(cached(x, target=1), plain(x, target=1), atol=1e-12)
    weight = [p for p in model.parameters() if p.dim() > 1][-1]
    with torch.no_grad():
        weight.mul_(-1.5)  # bumps the version counter: the cache notices
    assert torch.allclose(cached(x, target=1), plain(x, target=1), atol=1e-12)
    weight.data.mul_(0.5)  # invisible to version counters: documented, refresh() picks it up
    cached.refresh()
    assert torch.allclose(cached(x, target=1), plain(x, target=1), atol=1e-12)


def test_weight_substitution_on_a_node_without_weights_is_an_error(tmp_path: Path) -> None:
    err = _compile_error(
        tmp_path, RuleError, 'default: vjp(R)\nrules:\n  - match: name("_1")\n    relevance: vjp(R, w=2)\n'
    )  # _1 is a ReLU
    assert err.line == 6 and "parametric" in str(err)  # caught by the checker, before lowering


def test_moving_the_explainer_rebuilds_its_graphs() -> None:
    """`.to(...)`/`.double()` replace tensors the built graphs refer to: the explainer rebuilds them (the same
    path `.to("cuda")` takes; the shared model moves with it, as documented)."""
    torch.manual_seed(7)
    model = randomize_bn(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3))
    ).eval()
    x = torch.randn(2, 3, 16, 16)
    explainer = rulelang.compile(model, "lrp-zplus", example_input=x, cache_parameters=True)
    a32 = explainer(x, target=1)
    explainer.double()
    assert next(model.parameters()).dtype == torch.float64
    a64 = explainer(x.double(), target=1)
    assert a64.dtype == torch.float64
    assert torch.allclose(a64.float(), a32, rtol=1e-4, atol=1e-6)


def test_public_inspection_surface(fnet) -> None:
    """What fitting, checks and the analysis use instead of private methods: typed graph keys, activations,
    node parameters (BatchNorm folded), a node's own layer as a function, output shapes."""
    from rulelang.compiler.keys import GraphKey

    model, x = fnet
    explainer = rulelang.compile(model, "gradient", example_input=x)
    assert explainer.build(GraphKey("explain")) is explainer.build(GraphKey("explain"))  # cached per key
    with pytest.raises(ValueError):
        GraphKey("propagate")  # propagate needs `at`
    assert explainer.shapes["conv3"] == (3, 6, 8, 8) and list(explainer.shapes) == explainer.nodes
    assert explainer.num_classes == 5
    acts = explainer.activations(x, ["conv1", "fc"])
    assert torch.allclose(acts["conv1"][0], x) and torch.allclose(acts["conv1"][1], model.conv1(x))
    assert torch.allclose(acts["fc"][1], model(x))
    params = explainer.node_parameters(["conv2", "fc"])
    bn = model.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(params["conv2"]["w"], model.conv2.weight * scale[:, None, None, None])
    assert torch.allclose(params["fc"]["b"], model.fc.bias)
    layer = explainer.layer_function("fc")
    h = torch.randn(3, 96, dtype=torch.float64)
    assert torch.allclose(layer(h, params["fc"]["w"]), h @ model.fc.weight.T)  # bias 0
    with pytest.raises(ExplainError, match="no weights"):
        explainer.layer_function("relu")
    with pytest.raises(ExplainError, match="no node named"):
        explainer.activations(x, ["nope"])
