"""One test case of a rule (a model, an input batch, parameters, a target) and its runnable Python form.

A `Case` is what the property runner draws: a `ModelSpec`, an `InputSpec`, parameter overrides and a target.
`Case.code(...)` prints it as a self-contained script that rebuilds the model, the input tensor (as a literal)
and the parameters, and re-runs the failing check.
"""

from __future__ import annotations

import pprint
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from .strategies import FORMS, HEADS, INPUT_KINDS, RELU_FORMS, InputSpec, ModelSpec, input_specs, model_specs, params


@dataclass(frozen=True)
class Case:
    """A rule (library name or path) on a model built from `spec`, with input `inputs`, overrides `params`."""

    rule: str
    spec: ModelSpec
    inputs: InputSpec
    params: tuple[tuple[str, Any], ...] = ()
    target: int | None = None

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def bounds(self) -> tuple[float, float] | None:
        return self.inputs.bounds

    def model(self, dtype: torch.dtype = torch.float64) -> nn.Module:
        """A fresh model (build it once per check: the checks must not share a model they might mutate)."""
        return self.spec.build(dtype)

    def x(self, model: nn.Module) -> torch.Tensor:
        return self.inputs.make(model)

    def code(self, check: str, message: str = "", offending: str = "", call: str | None = None) -> str:
        """A runnable script reproducing this case and the failing check."""
        model = self.spec.build()
        x = self.x(model)
        call = call or f"properties.{check}(rule, model, x, target=target, params=params{_bounds_arg(self)})"
        lines = [
            f"# rulelang test: `{check}` fails for {self.rule}",
            *(f"# {line}" for line in message.splitlines()),
            *(f"# offending values: {line}" for line in offending.splitlines()),
            self.spec.code(),
            f"x = torch.tensor({_literal(x)}, dtype=torch.float64)  # input kind: {self.inputs.kind}",
            f"rule = {_rule_ref(self.rule)!r}",
            f"params = {self.param_dict!r}",
            f"target = {self.target!r}",
        ]
        if self.bounds is not None:
            lines.append(f"bounds = {self.bounds!r}")
        lines += [
            "",
            "import rulelang  # noqa: E402",
            "from rulelang.testing import properties  # noqa: E402",
            "",
            f"explainer = rulelang.compile(model, rule, example_input=x{_bounds_arg(self, 'input_bounds')}, **params)",
            "print(explainer.plan)",
            f"{call}  # raises PropertyFailed",
        ]
        return "\n".join(lines) + "\n"


def _rule_ref(rule: str) -> str:
    """A library name as is; a file as an absolute path (the script runs from anywhere)."""
    from ..lang.library import looks_like_path

    return str(Path(rule).resolve()) if looks_like_path(rule) and Path(rule).exists() else rule


def _bounds_arg(case: Case, name: str = "bounds") -> str:
    return f", {name}=bounds" if case.bounds is not None else ""


def _literal(x: torch.Tensor) -> str:
    """An exact Python literal of a float64 tensor (repr of floats round-trips)."""
    text = pprint.pformat(x.tolist(), width=110, compact=True)
    return text.replace("\n", "\n" + " " * len("x = torch.tensor("))


# ------------------------------------------------------------------------------------------------ coverage
@dataclass(frozen=True)
class Coverage:
    """Which model blocks a rule file can explain (a node that no rule matches makes compilation fail)."""

    blocks: tuple[str, ...]
    activations: tuple[str, ...]
    pools: tuple[str, ...]
    heads: tuple[str, ...]
    missing: tuple[str, ...] = field(default=())

    def options(self) -> dict[str, Any]:
        return {"blocks": self.blocks, "activations": self.activations, "pools": self.pools, "heads": self.heads}


#: op kind -> the blocks (after a conv) that produce it
_PROBES: dict[str, tuple[Any, ...]] = {
    "relu": (("act", "relu"),),
    "activation": (("act", "tanh"),),
    "affine": (("act", "relu"), ("bn", "module")),
    "maxpool": (("pool", "maxpool"),),
    "avgpool": (("pool", "avgpool"),),
    "add": (("res2", "plus"),),
    "cat": (("cat", "torch.cat"),),
    "dropout": (("dropout", "module"),),
}


@lru_cache(maxsize=64)
def coverage(rule: str) -> Coverage:
    """Probe-compiles one tiny model per op kind; the blocks drawn for this rule use only the kinds it matches."""
    from ..compiler.explainer import compile as compile_
    from ..errors import CompileError

    def ok(blocks: tuple[Any, ...]) -> bool:
        spec = ModelSpec(channels=1, size=4, blocks=(("conv", "module", 1), *blocks), head="flatten")
        try:
            compile_(spec.build(), rule, example_input=torch.zeros(1, 1, 4, 4, dtype=torch.float64), check=False)
        except CompileError as e:
            if "no rule matches" in str(e):
                return False
            raise
        return True

    if not ok(()):
        raise CompileError(f"{rule}: no rule for a conv + flatten + dense model: nothing to test")
    have = {kind for kind, probe in _PROBES.items() if ok(probe)}
    acts = tuple(a for a in _ACT_FORMS if ("relu" if a in RELU_FORMS else "activation") in have)
    pools = tuple(p for p in FORMS["pool"] if ("maxpool" if "max" in p else "avgpool") in have)
    needs = {
        "conv": set(),
        "bn": {"affine"},
        "act": set(),
        "pool": set(),
        "res2": {"add", "relu"},
        "res3": {"add", "relu"},
        "cat": {"cat", "relu"},
        "twice": {"relu"},
        "dropout": {"dropout"},
    }
    blocks = tuple(k for k, need in needs.items() if need <= have and (k != "act" or acts) and (k != "pool" or pools))
    heads = tuple(h for h in HEADS if h not in ("mean", "adaptive") or "avgpool" in have)
    return Coverage(blocks, acts or RELU_FORMS, pools, heads, tuple(k for k in _PROBES if k not in have))


_ACT_FORMS = FORMS["act"]


# ------------------------------------------------------------------------------------------------ strategy
def _bounds(rf: Any, values: dict[str, Any]) -> tuple[float, float] | None:
    """Input bounds of rules with scalar `lo`/`hi` parameters (z-box): inputs are clipped to them."""
    lo, hi = values.get("lo"), values.get("hi")
    return (float(lo), float(hi)) if isinstance(lo, float) and isinstance(hi, float) else None


def cases(
    rule: str,
    bias: bool | None = None,
    batch: int = 2,
    max_blocks: int = 5,
    input_kinds: tuple[str, ...] = INPUT_KINDS,
) -> st.SearchStrategy[Case]:
    """`Case`s for a rule file: models it covers, inputs, parameters satisfying `require:`, a target class."""
    from ..lang.loader import load

    rf = load(rule)
    specs = model_specs(max_blocks=max_blocks, bias=bias, **coverage(rule).options())
    overrides_ = params(rf)

    @st.composite
    def draw_case(draw: st.DrawFn) -> Case:
        spec = draw(specs)
        overrides = draw(overrides_)
        values = {**dict(rf.params), **overrides}
        inputs = draw(input_specs(batch, input_kinds, _bounds(rf, values)))
        target = draw(st.integers(0, spec.classes - 1))
        return Case(rule, spec, inputs, tuple(sorted(overrides.items())), target)

    return draw_case()
