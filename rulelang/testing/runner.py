"""Runs the properties of `properties.py` on random models with hypothesis, shrinking a failure to a minimal
counterexample printed as runnable Python.

```python
from rulelang.testing import check
for result in check("my-rule.yaml", profile="ci"):
    print(result)              # one line per property; a failure carries `.counterexample` (a script)
```

Profiles: `ci` (10 examples per property, no deadline) and `dev` (100); `seconds` caps a file's whole run (new
examples stop being drawn, a failure found in time is still shrunk).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis.errors import Flaky, HypothesisException

from . import properties as P
from .cases import Case, cases, coverage
from .strategies import INPUT_KINDS

#: examples per property
PROFILES: dict[str, int] = {"ci": 10, "dev": 100}

for _name, _n in PROFILES.items():
    settings.register_profile(
        f"rulelang-{_name}",
        max_examples=_n,
        deadline=None,
        database=None,
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
    )


@dataclass(frozen=True)
class Property:
    """A property as the runner sees it: `applies(rule_file, reference)` returns why not, or None."""

    name: str
    fn: Callable[..., str | None]  # None: checked; a string: why this example was vacuous
    applies: Callable[[Any, Any], str | None]
    bias: bool | None = None  # models drawn: None = with and without biases, False = bias-free only
    inputs: tuple[str, ...] = INPUT_KINDS  # input kinds drawn
    summary: str = ""


def _always(rf: Any, reference: Any) -> str | None:
    return None


def _declares_conservation(rf: Any, reference: Any) -> str | None:
    return None if rf.conserves else "the rule file does not declare `conserves: true`"


def _has_reference(rf: Any, reference: Any) -> str | None:
    return None if reference is not None else "no reference function given (Python: check(rule, reference=fn))"


PROPERTIES: dict[str, Property] = {
    p.name: p
    for p in (
        Property("finite", P.finite, _always, summary="no NaN or infinity"),
        Property("shape", P.shape, _always, summary="attribution shaped like the input"),
        Property("batch_independent", P.batch_independent, _always, summary="a batch equals each sample alone"),
        Property("precision", P.precision, _always, summary="float32 agrees with float64"),
        Property("deterministic", P.deterministic, _always, summary="same result twice"),
        Property(
            "conserves",
            P.conserves,
            _declares_conservation,
            bias=False,
            # bias-free models map zeros and dead inputs to a zero output; at |z| ~ eps the stabiliser takes a share
            inputs=("normal", "large", "positive"),
            summary="sum of attribution = seed (no bias)",
        ),
        Property("agrees", P.agrees, _has_reference, summary="equals the reference function"),
        Property("linear_in_R", P.linear_in_R, _always, summary="linear in R where the static analysis says so"),
        Property("sound", P.sound, _always, summary="static sign verdicts hold for sampled Jacobian entries"),
        Property("unmutated", P.unmutated, _always, summary="model and input unchanged"),
    )
}


@dataclass
class Result:
    """The outcome of one property on one rule file."""

    rule: str
    prop: str
    status: str  # "passed" | "failed" | "not applicable" | "skipped" (the time cap came first)
    examples: int = 0
    reason: str = ""
    counterexample: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def line(self) -> str:
        """One line: `finite: passed (10 examples)`, `conserves: not applicable (why)`, `finite: FAILED: why`."""
        if self.status == "passed":
            extra = f"; {self.reason}" if self.reason else ""
            return f"{self.prop}: passed ({self.examples} example{'s' if self.examples != 1 else ''}{extra})"
        if self.status in ("not applicable", "skipped"):
            return f"{self.prop}: {self.status} ({self.reason})"
        n = f"{self.examples} passing example{'s' if self.examples != 1 else ''}"
        return f"{self.prop}: FAILED after {n}: {self.reason.splitlines()[0]}"

    def __str__(self) -> str:
        if self.status != "failed":
            return self.line()
        rest = "\n".join(self.reason.splitlines()[1:])
        out = self.line() + (f"\n{rest}" if rest else "")
        if self.counterexample:
            out += "\n# ---- minimal counterexample (runnable) ----\n" + self.counterexample
        return out


# ------------------------------------------------------------------------------------------------- caching
class _Models:
    """One model per case, shared by the properties that draw the same case (hypothesis with a fixed seed draws
    the same examples for each property), so that compiled explainers are shared too."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.models: OrderedDict[Case, tuple[Any, Any]] = OrderedDict()

    def get(self, case: Case) -> tuple[Any, Any]:
        key = Case(case.rule, case.spec, case.inputs, case.params, None)
        if key not in self.models:
            model = case.model()
            self.models[key] = (model, case.x(model))
            if len(self.models) > self.size:
                self.models.popitem(last=False)
        self.models.move_to_end(key)
        return self.models[key]


# ------------------------------------------------------------------------------------------------- running
def check_property(
    rule: Any,
    prop: str | Property,
    *,
    profile: str = "ci",
    examples: int | None = None,
    seed_: int = 0,
    deadline: float = math.inf,
    reference: Callable[..., Any] | None = None,
    assume_linear: bool = False,
    shrink_seconds: float = 30.0,
    _models: _Models | None = None,
) -> Result:
    """Runs one property on random cases of `rule`; a failure is shrunk and returned with its counterexample.

    `assume_linear=True` checks `linear_in_R` on every example (the author claims the rule is linear in R), not
    only where the static analysis claims it. Shrinking stops after `shrink_seconds` with the smallest failing
    example found by then.
    """
    from ..lang.loader import load

    rule = _rule_name(rule)
    p = PROPERTIES[prop] if isinstance(prop, str) else prop
    rf = load(rule)
    why = p.applies(rf, reference)
    if why is not None:
        return Result(rule, p.name, "not applicable", reason=why)
    models = _models or _Models()
    state: dict[str, Any] = {
        "n": 0,
        "failed": False,
        "case": None,
        "error": None,
        "vacuous": 0,
        "why": "",
        "before": 0,
        "capped": False,
        "failing": set(),  # every failing case seen (kept runnable when shrinking is cut short)
        "shrink_until": math.inf,
    }
    base = settings.get_profile(f"rulelang-{profile}")
    budget = settings(base, max_examples=examples if examples is not None else base.max_examples)

    @budget
    @seed(seed_)
    @given(cases(rule, bias=p.bias, input_kinds=p.inputs))
    def run_case(case: Case) -> None:
        if not state["failed"] and time.monotonic() > deadline:
            state["capped"] = True
            return  # out of time: no new work (a failure already found is still shrunk)
        if state["failed"] and time.monotonic() > state["shrink_until"] and case not in state["failing"]:
            return  # shrinking took long enough: keep the smallest failure found so far
        state["case"] = case
        if p.name == "unmutated":
            model = case.model()
            x = case.x(model)
        else:
            model, x = models.get(case)
        extra: dict[str, Any] = {"reference": reference} if p.name == "agrees" else {}
        if p.name == "linear_in_R":
            extra["only_if_static"] = not assume_linear
        try:
            skipped = p.fn(rule, model, x, target=case.target, params=case.param_dict, bounds=case.bounds, **extra)
        except P.PropertyFailed as e:
            _failed(state, case, shrink_seconds)
            state["error"] = e
            raise
        except HypothesisException:
            raise
        except Exception as e:  # a crash is a failure of the property too, and shrinks like one
            _failed(state, case, shrink_seconds)
            state["error"] = P.PropertyFailed(p.name, f"raised {type(e).__name__}: {e}")
            raise state["error"] from e
        if isinstance(skipped, str):
            state["vacuous"] += 1
            state["why"] = skipped
        else:
            state["n"] += 1

    with P.caching():
        try:
            run_case()
        except P.PropertyFailed as e:
            case: Case = state["case"]
            code = case.code(p.name, e.message, e.offending, call=_call(p.name, case))
            reason = e.message + (f"\n  offending values: {e.offending}" if e.offending else "")
            return Result(rule, p.name, "failed", state["before"], reason, code)
        except Flaky as e:
            return Result(rule, p.name, "failed", state["before"], f"the check is flaky (not reproducible): {e}")
    capped = "time cap reached" if state["capped"] else ""
    if state["n"] == 0 and state["vacuous"]:
        return Result(rule, p.name, "not applicable", reason=f"on every example: {state['why']}")
    if state["n"] == 0 and state["capped"]:
        return Result(rule, p.name, "skipped", reason="time cap reached before the first example")
    notes = (
        [f"{state['vacuous']} example{'s' if state['vacuous'] != 1 else ''} vacuous"] if state["vacuous"] else []
    ) + ([capped] if capped else [])
    return Result(rule, p.name, "passed", state["n"], reason="; ".join(notes))


def _failed(state: dict[str, Any], case: Case, shrink_seconds: float) -> None:
    if not state["failed"]:
        state["before"], state["failed"] = state["n"], True
        state["shrink_until"] = time.monotonic() + shrink_seconds
    state["failing"].add(case)


def _rule_name(rule: Any) -> str:
    """A library name or path as a string (a loaded RuleFile by its path)."""
    if hasattr(rule, "require"):
        if not rule.path:
            from ..errors import RulelangError

            raise RulelangError(
                "rulelang.testing needs a rule file on disk or a library name, not an in-memory RuleFile"
            )
        return str(rule.path)
    return str(rule)


def _call(name: str, case: Case) -> str:
    bounds = ", bounds=bounds" if case.bounds is not None else ""
    if name == "agrees":
        return (
            f"properties.agrees(rule, model, x, reference, target=target, params=params{bounds})"
            "  # `reference`: your function"
        )
    return f"properties.{name}(rule, model, x, target=target, params=params{bounds})"


def check(
    rule: Any,
    properties: Sequence[str] | None = None,
    *,
    profile: str = "ci",
    examples: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    reference: Callable[..., Any] | None = None,
    assume_linear: bool = False,
    shrink_seconds: float = 30.0,
) -> list[Result]:
    """Runs every property (or those named) on `rule` (library name or path) and returns one `Result` each.

    `seconds` caps the whole run: each property gets an equal share of what is left when it starts.
    `reference(model, x, target) -> attribution` enables the `agrees` property; `assume_linear` see
    `check_property`.
    """
    rule = _rule_name(rule)
    names = list(properties) if properties else list(PROPERTIES)
    unknown = [n for n in names if n not in PROPERTIES]
    if unknown:
        from ..errors import RulelangError

        raise RulelangError(f"unknown property {unknown[0]!r}; properties: {', '.join(PROPERTIES)}")
    from ..errors import CompileError
    from ..lang.loader import load

    rf = load(rule)
    try:
        coverage(rule)
    except CompileError as e:
        return [Result(rule, n, "not applicable", reason=str(e).split(": ", 1)[-1]) for n in names]
    start, models, out = time.monotonic(), _Models(), []
    applicable = [n for n in names if PROPERTIES[n].applies(rf, reference) is None]
    with P.caching():
        for name in names:
            deadline = math.inf
            if seconds is not None and name in applicable:
                left = start + seconds - time.monotonic()
                deadline = time.monotonic() + max(left, 0.0) / len(applicable)
                applicable.remove(name)
            out.append(
                check_property(
                    rule,
                    name,
                    profile=profile,
                    examples=examples,
                    seed_=seed,
                    deadline=deadline,
                    reference=reference,
                    assume_linear=assume_linear,
                    shrink_seconds=shrink_seconds,
                    _models=models,
                )
            )
    return out
