"""The builtin functions of rule bodies: arity, keywords, and where each may be used."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Signature:
    min_args: int
    max_args: int
    keywords: tuple[str, ...] = ()
    usage: str = ""


def _unary(name: str) -> Signature:
    return Signature(1, 1, (), f"{name}(t)")


FUNCTIONS: dict[str, Signature] = {
    "layer": Signature(1, 1, ("w", "b"), "layer(t, w=..., b=...)"),
    "vjp": Signature(1, 1, ("w", "b"), "vjp(s, w=..., b=...)"),
    "stab": Signature(2, 2, (), "stab(z, eps)"),
    "where": Signature(3, 3, (), "where(c, a, b)"),
    "clamp": Signature(1, 3, ("min", "max"), "clamp(t, lo, hi) or clamp(t, min=..., max=...)"),
    "percentile": Signature(2, 2, (), "percentile(t, q)"),
    "maximum": Signature(2, 2, (), "maximum(a, b)"),
    "minimum": Signature(2, 2, (), "minimum(a, b)"),
    **{
        n: _unary(n)
        for n in (
            "pos",
            "neg",
            "abs",
            "sign",
            "exp",
            "log",
            "sqrt",
            "ones_like",
            "zeros_like",
            "sum",
            "mean",
            "max",
            "min",
        )
    },
}

#: Functions bound to the current node's op, and the contexts that may call them.
NODE_FUNCTIONS: dict[str, tuple[str, ...]] = {"layer": ("rule", "forward"), "vjp": ("rule",)}

#: Attributes any expression has; any other attribute of `x` / `x[i]` reads a declared forward quantity.
ELEMENTWISE_ATTRS: tuple[str, ...] = ("pos", "neg", "abs")


def arity_text(sig: Signature) -> str:
    n = sig.min_args if sig.min_args == sig.max_args else f"{sig.min_args} to {sig.max_args}"
    word = "argument" if sig.max_args == 1 else "arguments"
    return f"{n} positional {word}"
