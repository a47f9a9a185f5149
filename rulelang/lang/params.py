"""Parameters: binding keyword overrides to a file's `params:`, and evaluating `require:` over them.

A parameter is a float or a tuple of floats (per channel). `require:` expressions are pure arithmetic and
comparisons over parameters (no tensors); with per-channel parameters a requirement must hold for every
channel (scalars broadcast). `==` and `!=` compare with a relative tolerance of 1e-9, so `alpha - beta == 1`
holds for alpha=1.1, beta=0.1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import RuleError
from .ast import Binary, Call, Expr, Name, Num, Pos, Unary
from .builtins import SCALAR_FUNCTIONS
from .diagnostics import did_you_mean, error_at
from .visit import names

Value = float | tuple[float, ...]


def coerce(name: str, value: Any) -> Value:
    """A user-supplied parameter value -> float or tuple of floats (RuleError for anything else)."""

    def one(v: Any) -> float:
        if isinstance(v, bool) or v is None:
            raise TypeError
        out = float(v)
        if not math.isfinite(out):
            raise ValueError
        return out

    try:
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError
            return tuple(one(v) for v in value)
        return one(value)
    except (TypeError, ValueError):
        raise RuleError(
            f"parameter `{name}` must be a finite number or a list of numbers, got {type(value).__name__} {value!r}"
        ) from None


def bind_params(
    params: dict[str, tuple[Value, Pos]], overrides: dict[str, Any], file_name: str, path: str | None
) -> dict[str, Value]:
    """The file's parameters with `overrides` applied (unknown names fail with "did you mean")."""
    bound = {k: v for k, (v, _) in params.items()}
    for key, value in overrides.items():
        if key not in bound:
            hint = did_you_mean(key, bound) or (
                f"parameters: {', '.join(bound)}" if bound else "this rule file has no parameters"
            )
            raise RuleError(f"unknown parameter `{key}` for `{file_name}`", path=path, hint=hint)
        try:
            bound[key] = coerce(key, value)
        except RuleError as e:
            raise RuleError(e.message, path=path, hint=f"the file's default is {bound[key]!r}") from None
    return bound


#: The functions `require:` may call: the builtins with a float implementation (rulelang/lang/builtins.py).
_FUNCS: dict[str, Callable[..., float]] = SCALAR_FUNCTIONS
_BIN: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "**": lambda a, b: a**b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "&": lambda a, b: bool(a) and bool(b),
    "|": lambda a, b: bool(a) or bool(b),
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
    "!=": lambda a, b: not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}


def evaluate(e: Expr, env: dict[str, float]) -> Any:
    """Evaluate a `require:` expression with scalar parameter values (RuleError on misuse)."""
    if isinstance(e, Num):
        return e.value
    if isinstance(e, Name):
        if e.id not in env:
            raise error_at(
                e.pos,
                f"unknown name `{e.id}` in `require:`",
                did_you_mean(e.id, env) or "`require:` may only use parameters",
            )
        return env[e.id]
    if isinstance(e, Unary):
        v = evaluate(e.operand, env)
        return (not v) if e.op == "~" else (-v if e.op == "-" else +v)
    if isinstance(e, Binary):
        a, b = evaluate(e.left, env), evaluate(e.right, env)
        try:
            out = _BIN[e.op](a, b)
        except (ZeroDivisionError, OverflowError, ValueError, TypeError) as err:
            raise error_at(e.pos, f"cannot evaluate requirement: {err}") from None
        if isinstance(out, complex):
            raise error_at(e.pos, "cannot evaluate requirement: complex result")
        return out
    if isinstance(e, Call) and e.func in _FUNCS and not e.kwargs:
        args = [evaluate(a, env) for a in e.args]
        try:
            return _FUNCS[e.func](*args)
        except (ValueError, TypeError) as err:
            raise error_at(e.pos, f"cannot evaluate `{e.func}` in requirement: {err}") from None
    what = f"`{e.func}(...)`" if isinstance(e, Call) else "this expression"
    raise error_at(
        e.pos,
        f"{what} cannot be used in `require:`",
        "requirements are arithmetic and comparisons over parameters (functions: " + ", ".join(_FUNCS) + ")",
    )


def check_requires(requires: list[Expr], params: dict[str, Value]) -> None:
    """Raise a RuleError at the first requirement that the bound parameters violate."""
    for e in requires:
        used = sorted(n for n in names(e) if n in params)
        widths = {len(v) for n, v in params.items() if n in used and isinstance(v, tuple)}
        if len(widths) > 1:
            raise error_at(e.pos, "per-channel parameters in this requirement have different lengths")
        channels = widths.pop() if widths else 1
        for c in range(channels):
            env = {n: (v[c] if isinstance(v, tuple) else v) for n, v in params.items()}
            if not evaluate(e, env):
                shown = ", ".join(f"{n}={_show(params[n])}" for n in used)
                from .printer import format_expr

                raise error_at(
                    e.pos,
                    f"requirement violated: `{format_expr(e)}`",
                    f"with {shown}" + (f" (channel {c})" if channels > 1 else ""),
                )


def _show(v: Value) -> str:
    from .printer import format_number

    return "[" + ", ".join(format_number(x) for x in v) + "]" if isinstance(v, tuple) else format_number(v)
