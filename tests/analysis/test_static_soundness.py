"""Soundness of the static analysis, measured: wherever a node's map is said to be non-negative (non-positive)
every entry of its Jacobian is >= -1e-6 (<= 1e-6) relative to the largest; wherever the chain is said to be
non-negative, so is every hidden relevance's Jacobian w.r.t. the output; wherever a map is said to be linear,
it is linear to float64 precision. Random models (rulelang.testing.strategies) x every library rule."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import rulelang
from rulelang.analysis import static
from rulelang.lang import library
from rulelang.testing.strategies import RELU_FORMS, InputSpec, ModelSpec, model_specs
from tests.helpers.numeric import jacobians, linearity_error, node_linearity_error, node_map, worst_negative

RULES = sorted(p.stem for p in library.rule_files() if not p.stem.startswith("_"))
TOL = 1e-6


def _weight_shape(ex, op):
    node = op.node
    if node.op == "call_module":
        return ex.model.get_submodule(node.target).weight.shape
    w = node.kwargs.get("weight", node.args[1])
    return w.meta["tensor_meta"].shape


def _compile(model, rule, x):
    ex = rulelang.compile(model, rule, example_input=x, check=False)
    if ex.rules.fit:  # random statistics: the analysis assumes nothing about fitted values (a stronger test)
        g = torch.Generator().manual_seed(0)
        ex.set_fitted(
            {
                (spec.name, op.name): torch.randn(_weight_shape(ex, op), generator=g, dtype=x.dtype)
                for spec, op in ex.fit_targets()
            }
        )
    return ex


def assert_sound(ex, x, node_linearity=True):
    res = static(ex)
    x1 = x[:1]
    for name, node in res.nodes.items():
        if node.linearity != "linear":
            continue
        err = node_linearity_error(ex, x1, name) if node_linearity else None
        assert err is None or err < 1e-9, f"{name}: said linear, error {err}\n{res}"
        if node.sign in ("nonnegative", "nonpositive", "zero"):
            j = node_map(ex, x1, name)
            if j is None:
                continue
            if node.sign != "nonpositive":
                assert worst_negative(j) >= -TOL, f"{name}: said {node.sign}\n{res}"
            if node.sign != "nonnegative":
                assert worst_negative(-j) >= -TOL, f"{name}: said {node.sign}\n{res}"
    top = ex.graph.ops[-1].name
    if res.verdict in ("nonnegative-chain", "mixed"):
        assert linearity_error(ex, x1, top) < 1e-9, str(res)
    if res.verdict == "nonnegative-chain":
        for n, j in jacobians(ex, x1, top).items():
            assert worst_negative(j) >= -TOL, f"chain said non-negative, {n} has negative entries\n{res}"
    return res


@given(model_specs(max_blocks=4, activations=RELU_FORMS), st.sampled_from(RULES))
def test_static_claims_hold_numerically(spec, rule):
    model = spec.build()
    x = InputSpec("normal", 2, spec.seed + 1).make(model).clamp(-3, 3)  # within the z^B rules' lo/hi
    assert_sound(_compile(model, rule, x), x)


@pytest.mark.parametrize("rule", RULES)
def test_every_library_rule_is_sound_on_a_residual_model(rule):
    blocks = (
        ("conv", "module", 2),
        ("act", "relu"),
        ("res2", "plus"),
        ("bn", "module"),
        ("cat", "torch.cat"),
        ("conv", "functional", 2),
        ("act", "F.relu"),
        ("pool", "maxpool"),
    )
    spec = ModelSpec(
        channels=2, size=4, blocks=blocks, tail=(("dense", "module", 4), ("act", "relu")), classes=3, seed=7
    )
    model = spec.build()
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64).clamp(-3, 3)
    res = assert_sound(_compile(model, rule, x), x, node_linearity=False)
    assert res.verdict in ("nonnegative-chain", "mixed", "positively-homogeneous", "nonlinear")
