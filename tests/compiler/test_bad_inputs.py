"""Bad input to the Python API, one row each: the error class and a key phrase (issue 12, cases 1-5, 7, 10, 11, 13).

Every row builds what it needs from `Case` (a small VGG-like model with `features` and `classifier`, an input, a
compiled gradient explainer); the table says what is done and which error, with which phrase, must come of it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from torch import nn
from torch.nn.modules import module as torch_module

import rulelang
from rulelang.errors import (
    CompileError,
    ExplainError,
    ModelError,
    NonFiniteError,
    NonFiniteWarning,
    RuleError,
    RulelangError,
)


class Net(nn.Module):
    """A miniature VGG: `features` (conv-relu-conv-relu-pool) and `classifier` (flatten-dense-...-dense)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Dropout(), nn.Linear(8, 8), nn.Linear(8, 5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass
class Case:
    model: Net
    x: torch.Tensor
    tmp: Path

    @property
    def ex(self) -> Any:
        if not hasattr(self, "_ex"):
            self._ex = rulelang.compile(self.model, "gradient", example_input=self.x)
        return self._ex

    def rule(self, body: str) -> str:
        path = self.tmp / "rule.yaml"
        path.write_text("rulelang: 1\nsummary: a rule for one test\n" + body)
        return str(path)


@pytest.fixture
def case(tmp_path: Path) -> Case:
    torch.manual_seed(0)
    return Case(Net().eval(), torch.randn(2, 3, 8, 8), tmp_path)


def autograd_grad(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[:, target].sum(), x)
    return g


# ------------------------------------------------------------------------------------------------- models
class Defaults(nn.Module):
    """A timm-style forward with optional arguments (they are settings, not inputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x, attn_mask=None, is_causal=False):
        if attn_mask is not None:
            x = x + attn_mask
        if is_causal:
            x = x * 2
        return self.fc(x)


class LeakyWhere(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(torch.where(h > 0, h, 0.1 * h))


class Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.fc = nn.Embedding(10, 4), nn.Linear(4, 3)

    def forward(self, ids):
        return self.fc(self.emb(ids)).mean(1)


class Scores(nn.Module):
    """Outputs one score per sample: shape (B,)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(x).squeeze(1)


class Total(nn.Module):
    def forward(self, x):
        return (x * 2).sum()


class Tokens(nn.Module):
    """Outputs (B, N, C): `target` indexes dim 1 (N here)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 7)

    def forward(self, x):
        return self.fc(x)


def _hooked(register: Callable[[Net], Any]) -> Callable[[Case], Any]:
    def run(c: Case) -> Any:
        register(c.model)
        return rulelang.compile(c.model, "gradient", example_input=c.x)

    return run


def _hook_after(c: Case) -> Any:
    c.ex(c.x, 1)
    c.model.features[2].register_forward_hook(lambda mod, i, o: o * 3.0)
    return c.ex(c.x, 1)


def _global_hook(c: Case) -> Any:
    handle = torch_module.register_module_forward_hook(lambda mod, i, o: None)
    try:
        return rulelang.compile(c.model, "gradient", example_input=c.x)
    finally:
        handle.remove()


def _replaced(c: Case) -> Any:
    c.ex(c.x, 1)
    c.model.classifier[5] = nn.Linear(8, 5)
    return c.ex(c.x, 1)


def _appended(c: Case) -> Any:
    c.ex(c.x, 1)
    c.model.classifier.append(nn.ReLU())
    return c.ex(c.x, 1)


def _nan_sample(c: Case) -> Any:
    x = c.x.clone()
    x[1, 0, 2, 2] = float("nan")
    return c.ex(x, 1)


def _rel(shape: tuple[int, ...]) -> Callable[[Case], Any]:
    return lambda c: c.ex.propagate(c.x, at="features.2", relevance=torch.randn(shape))


def _fit(data: Callable[[Case], Any]) -> Callable[[Case], Any]:
    def run(c: Case) -> Any:
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
        ex = rulelang.compile(model, "pattern-net", example_input=torch.randn(3, 4))
        return rulelang.fit(ex, data(c), progress=False)

    return run


#: (id, action on a Case, error class, phrase in the message)
CASES: list[tuple[str, Callable[[Case], Any], type[Exception], str]] = [
    # 1: hooks are refused at compile time, naming the module and the hook; hooks added later are caught per call
    (
        "forward hook",
        _hooked(lambda m: m.features[2].register_forward_hook(lambda mod, i, o: o * 3.0)),
        ModelError,
        "forward hook `",
    ),
    (
        "forward hook names module",
        _hooked(lambda m: m.features[2].register_forward_hook(lambda mod, i, o: o * 3.0)),
        ModelError,
        "module `features.2` (Conv2d)",
    ),
    (
        "forward pre-hook",
        _hooked(lambda m: m.classifier[1].register_forward_pre_hook(lambda mod, i: None)),
        ModelError,
        "pre-hook",
    ),
    (
        "hook with kwargs",
        _hooked(lambda m: m.features[0].register_forward_hook(lambda mod, a, k, o: o, with_kwargs=True)),
        ModelError,
        "features.0",
    ),
    (
        "hook on a container",
        _hooked(lambda m: m.features.register_forward_hook(lambda mod, i, o: o)),
        ModelError,
        "module `features` (Sequential)",
    ),
    ("global hook", _global_hook, ModelError, "global forward hook"),
    ("hook after compiling", _hook_after, ExplainError, "registered after compiling"),
    # 2: structural changes are detected per call
    ("replaced submodule", _replaced, ExplainError, "submodule `classifier.5` (Linear) was replaced"),
    ("appended submodule", _appended, ExplainError, "classifier.6` was added"),
    # 4: non-finite results raise, naming where they appear
    ("nan in one sample", _nan_sample, NonFiniteError, "input x itself has NaN or infinite values in sample(s) [1]"),
    ("bad on_nonfinite", lambda c: c.ex.explain(c.x, 1, on_nonfinite="maybe"), ExplainError, "on_nonfinite"),
    (
        "bad on_nonfinite at compile",
        lambda c: rulelang.compile(c.model, "gradient", example_input=c.x, on_nonfinite=True),
        ExplainError,
        "on_nonfinite",
    ),
    # 5: targets are integers only
    ("float target", lambda c: c.ex(c.x, 2.7), ExplainError, "got 2.7: float is not a class index"),
    ("integral float target", lambda c: c.ex(c.x, 2.0), ExplainError, "float is not a class index"),
    ("float tensor target", lambda c: c.ex(c.x, torch.tensor([1.9, 2.2])), ExplainError, "not an integer type"),
    ("bool target", lambda c: c.ex(c.x, True), ExplainError, "bool is not a class index"),
    ("bool tensor target", lambda c: c.ex(c.x, torch.tensor([True, False])), ExplainError, "torch.bool"),
    ("string target", lambda c: c.ex(c.x, "3"), ExplainError, "str is not a class index"),
    ("float in a list", lambda c: c.ex(c.x, [1, 2.0]), ExplainError, "holds 2.0"),
    ("numpy float target", lambda c: c.ex(c.x, np.array([1.0, 2.0])), ExplainError, "float64"),
    ("2-d target", lambda c: c.ex(c.x, torch.tensor([[1], [2]])), ExplainError, "1-d"),
    ("target per sample count", lambda c: c.ex(c.x, [1, 2, 3]), ExplainError, "3 entries for a batch of 2"),
    ("target out of range", lambda c: c.ex(c.x, 5), ExplainError, "valid classes are 0..4"),
    ("negative target out of range", lambda c: c.ex(c.x, [-6, 0]), ExplainError, "out of range"),
    ("dict target", lambda c: c.ex(c.x, {"a": 1}), ExplainError, "dict is not a class index"),
    # 7: keep and propagate
    ("keep a bare name", lambda c: c.ex.explain(c.x, 1, keep="features.0"), ExplainError, "keep=['features.0']"),
    ("keep a number", lambda c: c.ex.explain(c.x, 1, keep=3), ExplainError, "keep must be True"),
    ("keep an unknown node", lambda c: c.ex.explain(c.x, 1, keep=["nope"]), ExplainError, "no node named 'nope'"),
    ("keep a mixed list", lambda c: c.ex.explain(c.x, 1, keep=["features.0", 1]), ExplainError, "keep must be"),
    (
        "relevance of the wrong shape",
        _rel((2, 4, 8)),
        ExplainError,
        "node features_2 must have the node's output shape (2, 4, 8, 8)",
    ),
    ("relevance of the wrong batch", _rel((3, 4, 8, 8)), ExplainError, "(batch 2), got (3, 4, 8, 8)"),
    (
        "relevance not a tensor",
        lambda c: c.ex.propagate(c.x, at="features.2", relevance=1.0),
        ExplainError,
        "must be a tensor",
    ),
    (
        "integer relevance",
        lambda c: c.ex.propagate(c.x, at="features.2", relevance=torch.ones(2, 4, 8, 8, dtype=torch.long)),
        ExplainError,
        "floating-point",
    ),
    (
        "propagate at an unknown node",
        lambda c: c.ex.propagate(c.x, at="nope", relevance=torch.ones(1)),
        ExplainError,
        "no node named 'nope'",
    ),
    ("propagate at a number", lambda c: c.ex.propagate(c.x, at=3, relevance=torch.ones(1)), ExplainError, "node name"),
    # 10: models
    (
        "integer input (embeddings)",
        lambda c: rulelang.compile(Embed(), "gradient", example_input=torch.randint(0, 10, (2, 5))),
        ModelError,
        "floating-point inputs",
    ),
    (
        "(B,) output",
        lambda c: rulelang.compile(Scores(), "gradient", example_input=torch.randn(2, 4)),
        ModelError,
        "`target` indexes dim 1",
    ),
    (
        "scalar output",
        lambda c: rulelang.compile(Total(), "gradient", example_input=torch.randn(2, 4)),
        ModelError,
        "output has shape ()",
    ),
    (
        "(B, N, C) output, target beyond dim 1",
        lambda c: rulelang.compile(Tokens(), "gradient", example_input=torch.randn(2, 3, 4))(torch.randn(2, 3, 4), 5),
        ExplainError,
        "3 entries along dim 1",
    ),
    (
        "two inputs",
        lambda c: rulelang.compile(nn.Bilinear(4, 4, 2), "gradient", example_input=torch.randn(2, 4)),
        CompileError,
        "2 inputs",
    ),
    # 11: inputs
    (
        "example_input without batch",
        lambda c: rulelang.compile(nn.Linear(4, 3), "gradient", example_input=torch.randn(4)),
        ModelError,
        "may lack its batch dimension",
    ),
    (
        "example_input of batch 0",
        lambda c: rulelang.compile(c.model, "gradient", example_input=c.x[:0]),
        ModelError,
        "batch size 0",
    ),
    (
        "example_input float16, model float32",
        lambda c: rulelang.compile(c.model, "gradient", example_input=c.x.half()),
        ModelError,
        "model.to(torch.float16)",
    ),
    (
        "example_input bfloat16, model float32",
        lambda c: rulelang.compile(c.model, "gradient", example_input=c.x.bfloat16()),
        ModelError,
        "cast one",
    ),
    (
        "example_input int",
        lambda c: rulelang.compile(c.model, "gradient", example_input=c.x.long()),
        ModelError,
        "floating-point",
    ),
    (
        "example_input a list",
        lambda c: rulelang.compile(c.model, "gradient", example_input=[c.x]),
        CompileError,
        "one tensor",
    ),
    ("x float16", lambda c: c.ex(c.x.half(), 1), ExplainError, "x.to(torch.float32)"),
    ("x int", lambda c: c.ex(c.x.long(), 1), ExplainError, "floating-point inputs"),
    ("x without batch", lambda c: c.ex(c.x[0], 1), ExplainError, "x.unsqueeze(0)"),
    ("x of batch 0", lambda c: c.ex(c.x[:0], 1), ExplainError, "batch size 0"),
    ("x not a tensor", lambda c: c.ex(c.x.numpy(), 1), ExplainError, "must be a torch.Tensor"),
    ("x of another size", lambda c: c.ex(torch.randn(2, 3, 12, 12), 1), ExplainError, "compiled for (2, 3, 8, 8)"),
    (
        "reference of the wrong shape",
        lambda c: rulelang.compile(c.model, "deeplift-rescale", example_input=c.x)(c.x, 1, reference=torch.zeros(3, 4)),
        ExplainError,
        "reference has shape (3, 4)",
    ),
    (
        "reference for a rule without one",
        lambda c: c.ex(c.x, 1, reference=torch.zeros_like(c.x)),
        ExplainError,
        "takes no reference input",
    ),
    # 13: fit's data
    ("fit on a string", _fit(lambda c: "data.pt"), RulelangError, "data is a str"),
    ("fit on a number", _fit(lambda c: 5), RulelangError, "data is a int"),
    ("fit on dict batches", _fit(lambda c: [{"x": torch.randn(3, 4)}]), RulelangError, "batch 0 of data is a dict"),
    ("fit on empty data", _fit(lambda c: []), RulelangError, "empty data"),
]


@pytest.mark.parametrize(("action", "error", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(case: Case, action: Callable[[Case], Any], error: type[Exception], phrase: str) -> None:
    with pytest.raises(error) as err:
        action(case)
    assert phrase in str(err.value)
    assert "\n" not in str(err.value).strip() or isinstance(err.value, RuleError)  # one line
    assert "While executing" not in str(err.value)


# ---------------------------------------------------------------------------------- what works instead
def test_hooks_are_not_touched_and_removing_them_unblocks(case: Case) -> None:
    handle = case.model.features[2].register_forward_hook(lambda mod, i, o: o * 3.0)
    with pytest.raises(ModelError):
        rulelang.compile(case.model, "gradient", example_input=case.x)
    assert len(case.model.features[2]._forward_hooks) == 1  # refused, not removed
    handle.remove()
    ex = rulelang.compile(case.model, "gradient", example_input=case.x)
    assert torch.allclose(ex(case.x, 2), autograd_grad(case.model, case.x, 2), atol=1e-6)


def test_refresh_traces_a_replaced_submodule(case: Case) -> None:
    ex = case.ex
    ex(case.x, 1)
    case.model.classifier[5] = nn.Linear(8, 5)
    with pytest.raises(ExplainError, match="refresh"):
        ex.explain(case.x, 1)
    ex.refresh()
    assert torch.allclose(ex.explain(case.x, 1).output, case.model(case.x))
    assert torch.allclose(ex(case.x, 1), autograd_grad(case.model, case.x, 1), atol=1e-6)


def test_wrong_shaped_rule_is_reported_at_its_own_line(case: Case) -> None:
    with pytest.raises(RuleError) as err:
        rulelang.compile(
            case.model, case.rule("default: vjp(R)\nrules:\n  - match: first\n    relevance: R\n"), example_input=case.x
        )
    assert err.value.line == 6 and "returns relevance of shape (2, 4, 8, 8)" in str(err.value)
    assert "(2, 3, 8, 8)" in str(err.value) and "While executing" not in str(err.value)
    # a middle node (the max-pool) returning R: blamed on its own rule, not on its consumer's `default:`
    text = 'default: vjp(R)\nrules:\n  - match: name("features.4")\n    relevance: R\n'
    with pytest.raises(RuleError) as err:
        rulelang.compile(case.model, case.rule(text), example_input=case.x)
    assert err.value.line == 6 and "node features_4" in str(err.value)


def test_nonfinite_relevance_names_the_rule(case: Case) -> None:
    text = "default: vjp(R)\nrules:\n  - match: dense\n    relevance: x * vjp(R / (layer(x) - layer(x)))\n"
    path = case.rule(text)
    ex = rulelang.compile(case.model, path, example_input=case.x)
    with pytest.raises(NonFiniteError) as err:
        ex(case.x, 1)
    assert "node classifier_5" in str(err.value) and f"{path}:5" in str(err.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = ex.explain(case.x, 1, on_nonfinite="warn").attribution
    assert not torch.isfinite(a).all() and any(issubclass(w.category, NonFiniteWarning) for w in caught)
    quiet = rulelang.compile(case.model, path, example_input=case.x, on_nonfinite="ignore")
    assert not torch.isfinite(quiet(case.x, 1)).all()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (-1, 4),
        (np.int64(2), 2),
        ([0, -2], [0, 3]),
        (np.array([1, 3]), [1, 3]),
        (torch.tensor([4, 0], dtype=torch.int32), [4, 0]),
    ],
)
def test_integer_targets_count_from_the_end(case: Case, target: Any, expected: Any) -> None:
    ex = case.ex
    want = torch.stack(
        [
            autograd_grad(case.model, case.x, t)[k]
            for k, t in enumerate(expected if isinstance(expected, list) else [expected] * 2)
        ]
    )
    assert torch.allclose(ex(case.x, target), want, atol=1e-6)


def test_keep_a_subset(case: Case) -> None:
    full = case.ex.explain(case.x, 1, keep=True)
    assert set(full.relevances) == set(case.ex.nodes)
    some = case.ex.explain(case.x, 1, keep=["features.2", "classifier_4"])
    assert set(some.relevances) == {"features_2", "classifier_4"}
    assert torch.equal(some.relevances["features_2"], full.relevances["features_2"])
    assert case.ex.explain(case.x, 1, keep=False).relevances == {}


def test_defaulted_forward_arguments_are_not_inputs() -> None:
    torch.manual_seed(1)
    model, x = Defaults().eval(), torch.randn(2, 4)
    ex = rulelang.compile(model, "gradient", example_input=x)
    assert torch.allclose(ex(x, 1), autograd_grad(model, x, 1), atol=1e-6)


def test_torch_where_with_a_mask_traces() -> None:
    torch.manual_seed(2)
    model, x = LeakyWhere().eval(), torch.randn(5, 4)
    ex = rulelang.compile(model, "gradient", example_input=x)
    assert torch.allclose(ex(x, 2), autograd_grad(model, x, 2), atol=1e-6)


def test_token_outputs_target_dim_1() -> None:
    """(B, N, C) outputs: `target` picks along dim 1 and the seed covers every entry after it."""
    torch.manual_seed(3)
    model, x = Tokens().eval(), torch.randn(2, 3, 4)
    ex = rulelang.compile(model, "gradient", example_input=x)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xr)[:, 1, :].sum(), xr)
    assert torch.allclose(ex(x, 1), g, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_works_when_model_and_input_agree(case: Case, dtype: torch.dtype) -> None:
    model = case.model.to(dtype)
    ex = rulelang.compile(model, "lrp-epsilon", example_input=case.x.to(dtype))
    a = ex(case.x.to(dtype), 1)
    assert a.dtype == dtype and a.shape == case.x.shape and torch.isfinite(a).all()


def test_no_fx_traceback_on_stderr(case: Case, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ExplainError):
        case.ex(torch.randn(2, 3, 12, 12), 1)
    with pytest.raises(ModelError):
        rulelang.compile(nn.Linear(4, 3), "gradient", example_input=torch.randn(2, 5))
    err = capfd.readouterr().err
    assert "While executing" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    "data",
    [
        lambda x, y: x,  # one tensor: one batch (not one batch per row)
        lambda x, y: (x, y),  # one (x, y) batch
        lambda x, y: [x[:10], x[10:]],  # a list of batches
        lambda x, y: torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7),
    ],
    ids=["tensor", "x-y pair", "list", "loader"],
)
def test_fit_data_forms_agree(data: Callable[..., Any]) -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    x, y = torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 2, (20,))
    ref = dict(rulelang.fit("pattern-net", model, [x], progress=False).fitted.named_buffers())
    got = dict(rulelang.fit("pattern-net", model, data(x, y), progress=False).fitted.named_buffers())
    assert set(got) == set(ref) and all(torch.allclose(got[k], ref[k], atol=1e-10) for k in ref)


# -------------------------------------------------------------------------------------------- API fuzz
_FUZZ_MODEL = Net().eval()
_FUZZ_X = torch.randn(2, 3, 8, 8)
_SHAPES = rulelang.compile(_FUZZ_MODEL, "gradient", example_input=_FUZZ_X).shapes
_NODES = list(_SHAPES)

_junk = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.booleans(),
    st.text(max_size=3),
    st.lists(st.one_of(st.integers(-9, 9), st.floats(-3, 8, width=32), st.booleans()), max_size=4),
    st.lists(st.floats(-3, 8, width=32), min_size=1, max_size=3).map(torch.tensor),
    st.sampled_from([torch.tensor(True), torch.tensor([[1, 2]]), torch.tensor(3, dtype=torch.int8), {"a": 1}]),
)


def _valid_target(batch: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.integers(-5, 4),
        st.lists(st.integers(-5, 4), min_size=batch, max_size=batch),
        st.lists(st.integers(-5, 4), min_size=batch, max_size=batch).map(torch.tensor),
        st.lists(st.integers(-5, 4), min_size=batch, max_size=batch).map(np.array),
    )


_keeps = st.one_of(
    st.sampled_from([None, True, False, "all"]),
    st.lists(st.sampled_from(_NODES), max_size=3),
)
_bad_keeps = st.one_of(
    st.sampled_from(["features.0", 0, 1.5, b"all"]),
    st.lists(st.sampled_from(_NODES + ["nope", "features", ""]), min_size=1, max_size=3),
    st.lists(st.integers(), min_size=1, max_size=2),
)


@st.composite
def _sometimes(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """Mostly (5 in 6) a valid value, sometimes a bad one: a call then has about one bad argument."""
    return draw(good if draw(st.sampled_from([True] * 5 + [False])) else bad)


@st.composite
def _inputs(draw: st.DrawFn, batch: int) -> Any:
    if draw(st.sampled_from(["good"] * 5 + ["bad"])) == "bad":
        if draw(st.booleans()):
            return draw(st.sampled_from([None, 1.0, [[0.0]], np.zeros((batch, 3, 8, 8), dtype=np.float32)]))
        shape = draw(st.sampled_from([(0, 3, 8, 8), (3, 8, 8), (batch, 3, 9, 9), (batch, 1, 8, 8), (batch,)]))
        dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64, torch.bool]))
        return torch.randn(shape).to(dtype)
    x = torch.randn(batch, 3, 8, 8) * draw(st.sampled_from([1.0, 1.0, 1e-6, 1e6]))
    if draw(st.sampled_from(["finite"] * 4 + ["not"])) == "not":
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(st.sampled_from([float("nan"), float("inf"), 1e30]))
    return x


@st.composite
def _calls(draw: st.DrawFn) -> dict[str, Any]:
    eps = draw(_sometimes(st.sampled_from([1e-6, 0.25, 1.0]), st.sampled_from([0.0, -1.0, float("nan"), 1e30, "x"])))
    rule, params = draw(
        st.sampled_from(
            [
                ("gradient", {}),
                ("lrp-epsilon", {"eps": eps}),
                ("lrp-zplus", {}),
                ("deeplift-rescale", {}),
                ("lrp-alpha-beta", {"alpha": draw(st.sampled_from([2.0, 2.0, 0.5])), "beta": 1.0}),
            ]
        )
    )
    batch = draw(st.integers(1, 3))
    call = {"rule": rule, "params": params, "x": draw(_inputs(batch)), "keep": draw(_sometimes(_keeps, _bad_keeps))}
    call["on_nonfinite"] = draw(st.sampled_from(["raise", "raise", "raise", "warn", "ignore", "sometimes"]))
    if draw(st.booleans()):
        call["target"] = draw(_sometimes(_valid_target(batch), _junk))
    else:
        at = draw(_sometimes(st.sampled_from(_NODES), st.sampled_from(["nope", 3, None])))
        call["at"] = at
        good = (batch,) + tuple(_SHAPES[at][1:]) if at in _SHAPES else (batch, 4, 8, 8)
        shape = draw(
            _sometimes(st.just(good), st.sampled_from([(batch, 4, 4, 4), (2, 8), (batch + 1,) + good[1:], ()]))
        )
        dtype = draw(_sometimes(st.just(torch.float32), st.sampled_from([torch.float64, torch.int64, torch.bool])))
        call["relevance"] = torch.randn(shape).to(dtype)
    if draw(st.sampled_from(["none"] * (1 if rule == "deeplift-rescale" else 5) + ["reference"])) == "reference":
        shapes = [(batch, 3, 8, 8), (3, 8, 8), (1, 3, 8, 8), (3, 4)]
        call["reference"] = torch.zeros(draw(st.sampled_from(shapes)))
    return call


_COMPILED: dict[tuple[str, str], Any] = {}


def _explainer(rule: str, params: dict[str, Any]) -> Any:
    key = (rule, repr(sorted(params.items())))
    if key not in _COMPILED:
        try:
            _COMPILED[key] = rulelang.compile(_FUZZ_MODEL, rule, example_input=_FUZZ_X, **params)
        except RulelangError as e:
            _COMPILED[key] = e
    return _COMPILED[key]


@given(call=_calls())
def test_api_fuzz_fails_closed(call: dict[str, Any]) -> None:
    """Any combination of arguments: a RulelangError, or a result whose attribution is finite unless the caller
    asked for non-finite values to pass ("warn"/"ignore")."""
    ex = _explainer(call["rule"], call["params"])
    if isinstance(ex, RulelangError):
        event(f"compile: {type(ex).__name__}")
        return  # a clear compile error (e.g. a parameter failing its `require:`)
    common = {"keep": call["keep"], "on_nonfinite": call["on_nonfinite"]}
    if "reference" in call:
        common["reference"] = call["reference"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteWarning)
            if "at" in call:
                result = ex.propagate(call["x"], at=call["at"], relevance=call["relevance"], **common)
            else:
                result = ex.explain(call["x"], call["target"], **common)
    except RulelangError as e:
        event(f"call: {type(e).__name__}")
        return
    event(f"result ({'finite' if torch.isfinite(result.attribution).all() else 'non-finite'})")
    assert result.attribution.shape == call["x"].shape
    if call["on_nonfinite"] == "raise":
        assert torch.isfinite(result.attribution).all() and torch.isfinite(result.output).all()
