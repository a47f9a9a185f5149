"""The compile-time fast paths keep every guarantee (issue 15, compile time).

- The shape check's result cache (compiler/shapecheck.py, `MetaCache`): answering a repeated call from the cache
  gives every node the metadata that running it gives, failures are never cached, in-place calls always run.
- The explain graph's code is generated once, after dead-code elimination and hoisting (compiler/explainer.py).
- Tracing records source lines without fx's list of torch's files (graph/trace.py).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.fx as fx
from torch import nn

import rulelang
from rulelang.compiler import shapecheck
from rulelang.compiler.keys import EXPLAIN
from rulelang.compiler.shapecheck import MetaCache, ShapeChecker
from rulelang.errors import RuleError, RulelangError
from rulelang.lang.library import list_rules
from tests.helpers.models import SmallCNN, randomize_bn


class Blocks(nn.Module):
    """Two identical residual conv blocks (the same calls on the same shapes: cache hits), then a dense
    layer and a concatenation (a DenseNet-style cat) before it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
            for _ in range(2)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # the source line test_source_lines_point_at_the_model reads
        for block in self.blocks:
            x = torch.relu(x + block(x))
        x = torch.cat([x, x * 0.5], dim=1)
        return self.fc(torch.flatten(self.pool(x), 1))


def _meta(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return ("tensor", v.dtype, tuple(v.shape), v.stride(), v.storage_offset(), v.device.type)
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, tuple(_meta(a) for a in v))
    if isinstance(v, dict):
        return ("dict", tuple((k, _meta(a)) for k, a in v.items()))
    return (type(v).__name__, v if isinstance(v, (int, float, bool, str, type(None))) else None)


def _recorded_check(ex: Any, x: torch.Tensor, cache: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The metadata of every node's value during `check_graph` (derive graph and explain graph)."""
    seen: dict[str, Any] = {}

    class Recording(ShapeChecker):
        def run_node(self, n: fx.Node) -> Any:
            value = super().run_node(n)
            seen[f"{self.module.__class__.__name__}.{n.name}"] = _meta(value)
            return value

    with monkeypatch.context() as m:
        m.setattr(shapecheck, "ShapeChecker", Recording)
        shapecheck.check_graph(ex, x, cache=cache)
    return seen


def test_cache_gives_each_node_the_metadata_of_running_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every library rule that compiles on the two models: cached and uncached checks see the same metadata
    (shape, strides, dtype, offset) at every node; the second compile answers from the shared cache."""
    compared = 0
    for model, x in [
        (randomize_bn(Blocks()).eval(), torch.randn(2, 3, 8, 8)),
        (randomize_bn(SmallCNN()).eval(), torch.randn(2, 3, 16, 16)),
    ]:
        for rule in list_rules():
            try:
                ex = rulelang.compile(model, rule, example_input=x, check=False, input_bounds=(-4.0, 4.0))
            except RulelangError:
                continue  # no rule for some op of this model (fail closed), or parameters it needs
            if ex.rules.fit:
                continue  # checked once fitted
            plain = _recorded_check(ex, x, cache=False, monkeypatch=monkeypatch)
            cold = _recorded_check(ex, x, cache=True, monkeypatch=monkeypatch)
            warm = _recorded_check(ex, x, cache=True, monkeypatch=monkeypatch)  # from the shared cache
            assert cold == plain and warm == plain, rule
            assert len(plain) > 20
            compared += 1
    assert compared >= 50  # most library rules on both models


def _rule(tmp_path: Path, text: str) -> str:
    path = tmp_path / "rule.yaml"
    path.write_text("rulelang: 1\nsummary: a rule for one test\n" + text)
    return str(path)


def test_a_wrong_rule_on_a_repeated_block_is_still_reported(tmp_path: Path) -> None:
    """The second block runs the same calls on the same shapes as the first (answered from the cache); a rule
    giving the wrong shape at its conv only is still reported, at its own line."""
    model, x = Blocks().eval(), torch.randn(2, 3, 8, 8)
    rulelang.compile(model, "gradient", example_input=x)  # fills the shared cache with these calls
    text = 'default: vjp(R)\nrules:\n  - match: name("blocks.1.0")\n    relevance: R\n'
    with pytest.raises(RuleError) as err:
        rulelang.compile(model, _rule(tmp_path, text), example_input=x)
    assert err.value.line == 6 and "blocks_1_0" in str(err.value) and "(2, 8, 8, 8)" in str(err.value)


def test_failing_calls_are_not_cached(tmp_path: Path) -> None:
    """A shape error inside a body (`R * w` with the dense layer's weight) fails every time, never answered from
    a cache; a valid compile between the failures changes nothing."""
    model, x = SmallCNN().eval(), torch.randn(1, 3, 16, 16)
    path = _rule(
        tmp_path, "default: vjp(R)\nrules:\n  - match: dense\n    relevance: |\n      z = R * w\n      vjp(z)\n"
    )
    for _ in range(2):
        with pytest.raises(RuleError) as err:
            rulelang.compile(model, path, example_input=x)
        assert err.value.line == 7 and "shape error" in str(err.value)
        rulelang.compile(model, "gradient", example_input=x)


def _traced(f: Any) -> fx.GraphModule:
    return fx.symbolic_trace(f)


def _keys(f: Any, *args: Any) -> list[Any]:
    gm = _traced(f)
    cache = MetaCache()
    env = dict(zip([n for n in gm.graph.nodes if n.op == "placeholder"], args))
    keys = []
    for n in gm.graph.nodes:
        if n.op in ("call_function", "call_method"):
            a, k = fx.node.map_arg((n.args, n.kwargs), lambda m: env.get(m, torch.empty(1, device="meta")))
            found = cache.key(n, a, k)
            keys.append(found[0] if found is not None else None)
    return keys


def test_cache_keys_describe_everything_a_result_depends_on() -> None:
    m = torch.empty(3, 4, device="meta")

    def f(x: torch.Tensor) -> Any:
        return x.sum(0), x.sum(1), x * 2, x * 2.0, x * True, x.sum(dim=1, keepdim=True)

    keys = _keys(f, m)
    assert None not in keys and len(set(keys)) == len(keys)
    # strides, dtype and the default dtype are part of the key
    assert _keys(lambda x: x.sum(0), m) != _keys(lambda x: x.sum(0), m.t().contiguous().t())
    assert _keys(lambda x: x.sum(0), m) != _keys(lambda x: x.sum(0), m.double())
    before = _keys(lambda x: x.sum(0), m)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert _keys(lambda x: x.sum(0), m) != before
    finally:
        torch.set_default_dtype(default)


def test_in_place_and_real_tensor_calls_always_run() -> None:
    m = torch.empty(3, 4, device="meta")

    def inplace(x: torch.Tensor) -> Any:
        return x.unsqueeze_(0), torch.relu_(x), torch.nn.functional.relu(x, inplace=True), torch.add(x, 1, out=x)

    assert _keys(inplace, m) == [None, None, None, None]
    assert _keys(lambda x: x + 1, torch.zeros(3)) == [None]  # a real tensor: its values may matter


def test_a_cache_hit_is_a_fresh_tensor() -> None:
    """`b` is answered from the cache (the same call as `a`); reshaping it in place must not reshape `a`."""

    def f(x: torch.Tensor) -> Any:
        a = torch.relu(x)
        b = torch.relu(x)
        b.unsqueeze_(0)
        return a, b

    gm = _traced(f)
    x = torch.empty(3, 4, device="meta")
    for cache in (None, MetaCache()):
        a, b = ShapeChecker(gm, cache).run(x)
        assert tuple(a.shape) == (3, 4) and tuple(b.shape) == (1, 3, 4)


def test_cached_views_keep_their_offset() -> None:
    def f(x: torch.Tensor) -> Any:
        return x.narrow(1, 2, 2), x.narrow(1, 2, 2)

    first, second = ShapeChecker(_traced(f), MetaCache()).run(torch.empty(3, 4, device="meta"))
    assert second.storage_offset() == first.storage_offset() == 2 and second.stride() == first.stride()


def test_explain_code_is_generated_once_and_matches_its_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """One code generation per built explain graph (after dead-code elimination and hoisting), and that code is
    the graph's: explaining gives the gradient."""
    generated: list[str] = []
    original = fx.GraphModule.recompile

    def counting(self: fx.GraphModule) -> Any:
        generated.append(type(self).__name__)
        return original(self)

    monkeypatch.setattr(fx.GraphModule, "recompile", counting)
    model, x = randomize_bn(Blocks()).eval().double(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ex = rulelang.compile(model, "gradient", example_input=x)
    gm = ex.build(EXPLAIN)
    assert sum(name.startswith("Explain_explain") for name in generated) == 1
    assert gm.code == gm.graph.python_code("self").src
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg)[:, 3].sum(), xg)
    assert torch.allclose(ex(x, 3), grad, atol=1e-10)


def test_source_lines_point_at_the_model() -> None:
    ex = rulelang.compile(Blocks().eval(), "gradient", example_input=torch.randn(1, 3, 8, 8))
    lines, start = inspect.getsourcelines(Blocks.forward)
    line = start + next(i for i, s in enumerate(lines) if "x = self.stem(x)" in s)
    stem = next(op for op in ex.graph.ops if op.module == "stem")
    assert stem.source is not None and stem.source.startswith(f"{Path(__file__).name}:{line}: x = self.stem(x)")
