"""The op-kind tables agree: every `Kind` has a catalog spec row, an implementation (or the generic fallback its
row declares), and a rule in the library (or is declared rule-less); the rows' sign facts hold."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rulelang.compiler.impls import GENERIC, REGISTRY, Generic, register
from rulelang.graph.catalog import FUNCTION_KINDS, METHOD_KINDS, MODULE_KINDS, SPECS, output_nonneg
from rulelang.lang import ast as A
from rulelang.lang import kinds as K
from rulelang.lang.kinds import Kind
from rulelang.lang.library import list_rules
from rulelang.lang.loader import load

#: Kinds no file in rules/ names in a selector: only a file's `default:` rule handles them (with the reason).
RULE_LESS = {
    Kind.OTHER: "unrecognised calls: selectors cannot name it, only `default:` rules match it",
}


@pytest.mark.parametrize("kind", list(Kind), ids=str)
def test_every_kind_has_a_spec_row(kind: Kind) -> None:
    spec = SPECS[kind]
    assert spec.kind is kind
    assert spec.parametric == kind.parametric and spec.arity == kind.arity
    if kind is not Kind.OTHER:
        assert spec.modules or spec.functions or spec.methods, f"the catalog recognises no call as `{kind}`"


@pytest.mark.parametrize("kind", list(Kind), ids=str)
def test_every_kind_has_an_implementation_or_declares_the_generic_one(kind: Kind) -> None:
    impl = REGISTRY.get(kind)
    if SPECS[kind].generic:
        assert impl is None, f"`{kind}` has {type(impl).__name__} registered: drop `generic=True` from its row"
    else:
        assert impl is not None, f"`{kind}` has no registered implementation and its row does not say `generic=True`"
        assert kind in type(impl).kinds
        assert impl.parametric == kind.parametric


def test_registry_has_only_kinds_and_rejects_a_second_implementation() -> None:
    assert set(REGISTRY) <= set(Kind)
    assert not GENERIC.parametric
    with pytest.raises(ValueError, match="already has an implementation"):

        @register(Kind.RELU)
        class Again(Generic):
            pass


def _kind_atoms(sel: A.Selector | None) -> set[Kind]:
    if sel is None:
        return set()
    if isinstance(sel, A.Kind):
        return set(K.expand(sel.name))
    if isinstance(sel, A.Not):
        return _kind_atoms(sel.operand)
    if isinstance(sel, (A.And, A.Or)):
        return _kind_atoms(sel.left) | _kind_atoms(sel.right)
    return set()


def test_every_kind_is_named_by_a_rule_file_or_declared_rule_less() -> None:
    named: set[Kind] = set()
    for name in list_rules():
        for rule in load(name).rules:
            named |= _kind_atoms(rule.match)
    missing = set(Kind) - named - set(RULE_LESS)
    assert not missing, f"no rule file names {sorted(missing)}: add a rule (and a rule test) or declare it in RULE_LESS"
    assert Kind.OTHER not in named
    stale = set(RULE_LESS) & named
    assert not stale, f"rule files now name {sorted(stale)}: remove them from RULE_LESS"


def test_each_callable_belongs_to_one_row() -> None:
    seen: dict[object, Kind] = {}
    for spec in SPECS.values():
        for key in (*spec.modules, *spec.functions, *(("method", m) for m in spec.methods)):
            assert seen.setdefault(key, spec.kind) is spec.kind, f"{key} is both `{seen[key]}` and `{spec.kind}`"
    assert FUNCTION_KINDS == {f: k for f, k in seen.items() if not isinstance(f, (type, tuple))}
    assert METHOD_KINDS == {m: k for (_, m), k in (i for i in seen.items() if isinstance(i[0], tuple))}
    assert {t for types, _ in MODULE_KINDS for t in types} == {t for s in SPECS.values() for t in s.modules}


def test_language_sets_are_derived_from_the_enum() -> None:
    assert K.PARAMETRIC == {Kind.DENSE, Kind.CONV, Kind.AFFINE} == K.ALIASES["linear"]
    assert {Kind.ADD, Kind.MUL, Kind.CAT, Kind.MATMUL} <= K.MULTI_INPUT
    assert not (K.MULTI_INPUT & {Kind.RELU, Kind.CONV, Kind.RESHAPE})
    assert Kind.RELU == "relu" and "relu" in K.KINDS and f"{Kind.CONV:>5}" == " conv"
    assert K.expand("relu") == {Kind.RELU} and K.expand("linear") == K.PARAMETRIC
    with pytest.raises(KeyError):
        K.expand("relux")


# ------------------------------------------------------------------------------------------------- sign facts
#: One example call per kind whose row claims a fact (a function of one or two activation inputs).
_WITNESSES = {
    Kind.RELU: [F.relu, nn.ReLU()],
    Kind.MAXPOOL: [nn.MaxPool2d(2), nn.AdaptiveMaxPool2d(1), lambda x: F.max_pool2d(x, 3, 1, 1)],
    Kind.AVGPOOL: [nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), lambda x: torch.mean(x, (2, 3))],
    Kind.RESHAPE: [torch.flatten, lambda x: x.permute(0, 2, 3, 1), lambda x: F.pad(x, (1, 1)), lambda x: x[:, 1:]],
    Kind.DROPOUT: [nn.Dropout(0.5).eval(), nn.Dropout2d(0.3).eval()],
    Kind.IDENTITY: [nn.Identity()],
    Kind.ADD: [operator.add, torch.add],
    Kind.CAT: [lambda a, b: torch.cat([a, b], 1), lambda a, b: torch.stack([a, b], 1)],
}
_TWO_INPUTS = {Kind.ADD, Kind.CAT}


@pytest.mark.parametrize("kind", [k for k in Kind if SPECS[k].output_sign or SPECS[k].jacobian_sign], ids=str)
def test_sign_facts_hold_on_random_inputs(kind: Kind) -> None:
    spec = SPECS[kind]
    if spec.jacobian_sign == "weights":
        assert spec.parametric and spec.output_sign is None
        return
    assert kind in _WITNESSES, f"add a witness call for `{kind}` to check its row's sign facts"
    gen = torch.Generator().manual_seed(0)
    for fn in _WITNESSES[kind]:
        n = 2 if kind in _TWO_INPUTS else 1
        signed = [torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64) for _ in range(n)]
        out = fn(*signed)
        if spec.output_sign == "nonneg":
            assert (out >= 0).all()
        if spec.output_sign == "preserves":
            assert (fn(*[x.abs() for x in signed]) >= 0).all()
        if spec.jacobian_sign == "nonneg":
            jac = torch.autograd.functional.jacobian(fn, tuple(signed))
            assert all((j >= 0).all() for j in (jac if isinstance(jac, tuple) else (jac,)))


def test_output_nonneg_rejects_the_call_forms_that_break_a_fact() -> None:
    class Net(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = torch.add(x, x, alpha=-2.0)
            b = F.pad(x, (1, 1), value=-1.0)
            c = F.pad(x, (1, 1))
            return a.sum() + b.sum() + c.sum() + torch.relu(x).sum()

    gm = torch.fx.symbolic_trace(Net())
    from rulelang.graph.catalog import node_kind

    calls = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method")]
    facts = {n.name: output_nonneg(node_kind(n, gm), n, gm, True) for n in calls}
    assert facts["add"] is False and facts["pad"] is False and facts["pad_1"] is True and facts["relu"] is True
    assert output_nonneg(Kind.RELU, calls[0], gm, False) and not output_nonneg(Kind.MAXPOOL, calls[0], gm, False)
