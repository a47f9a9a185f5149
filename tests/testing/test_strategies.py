"""The strategies: models are runnable code, dead inputs kill a layer, parameters satisfy `require:`."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

import rulelang
from rulelang.lang.loader import load
from rulelang.lang.params import check_requires
from rulelang.testing.strategies import BLOCKS, InputSpec, ModelSpec, model_specs, params


@given(model_specs())
def test_the_printed_code_builds_the_same_model(spec: ModelSpec) -> None:
    model = spec.build()
    namespace: dict = {}
    exec(spec.code(), namespace)
    x = InputSpec("normal", 2, 5).make(model)
    with torch.no_grad():
        assert torch.equal(namespace["model"](x), model(x))


def test_the_generator_covers_every_block_kind() -> None:
    spec = ModelSpec(
        channels=2,
        size=8,
        blocks=tuple(
            [("conv", "functional", 2), ("bn", "module"), ("act", "relu_inplace"), ("pool", "adaptive_max")]
            + [(k, "plus") for k in ("res2", "res3")]
            + [("cat", "torch.cat"), ("twice", "module"), ("dropout", "module"), ("res2", "iadd"), ("act", "tanh")]
        ),
        head="view",
        tail=(("dense", "functional", 3), ("act", "sigmoid")),
    )
    assert {b[0] for b in spec.blocks} == set(BLOCKS)
    ex = rulelang.compile(spec.build(), "gradient", example_input=torch.zeros(1, 2, 8, 8, dtype=torch.float64))
    kinds = {str(op.kind) for op in ex.graph.ops}
    assert {"conv", "relu", "activation", "maxpool", "add", "cat", "reshape", "dense", "dropout"} <= kinds


def test_a_dead_input_kills_every_unit_of_the_first_relu() -> None:
    for seed in range(5):
        spec = ModelSpec(channels=3, size=4, blocks=(("conv", "module", 2), ("act", "relu")), seed=seed)
        model = spec.build()
        x = InputSpec("dead", 2, seed).make(model)
        with torch.no_grad():
            assert bool((model.l1(model.l0(x)) == 0).all())
            assert bool((model.l0(torch.randn_like(x)) > 0).any())  # a live input does not


@given(st.sampled_from(["lrp-alpha-beta", "lrp-gamma", "rectgrad", "lrp-zbox", "dtd-bounded"]), st.data())
def test_drawn_parameters_satisfy_the_requirements(rule: str, data: st.DataObject) -> None:
    rf = load(rule)
    overrides = data.draw(params(rf))
    values = {**dict(rf.params), **overrides}
    check_requires(list(rf.require), values)  # raises on a violation
    assert set(overrides) <= set(values)


@given(params("lrp-alpha-beta"))
def test_alpha_beta_draws_solve_the_equality(overrides: dict) -> None:
    rf = load("lrp-alpha-beta", **overrides)
    alpha, beta = rf.param_dict["alpha"], rf.param_dict["beta"]
    assert abs(alpha - beta - 1) < 1e-9 and beta >= 0
