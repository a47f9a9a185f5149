"""Small traversal helpers over expression ASTs."""

from __future__ import annotations

from collections.abc import Iterator

from .ast import Attr, Binary, Call, Expr, Index, Name, Num, Unary


def children(e: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of `e`, in source order."""
    if isinstance(e, (Num, Name)):
        return ()
    if isinstance(e, Attr):
        return (e.value,)
    if isinstance(e, Index):
        return (e.value, e.index)
    if isinstance(e, Call):
        return e.args + tuple(v for _, v in e.kwargs)
    if isinstance(e, Unary):
        return (e.operand,)
    if isinstance(e, Binary):
        return (e.left, e.right)
    raise TypeError(f"not an expression: {e!r}")


def walk(e: Expr) -> Iterator[Expr]:
    """Every node of `e`, pre-order."""
    yield e
    for c in children(e):
        yield from walk(c)


def names(e: Expr) -> set[str]:
    """The variable names `e` reads."""
    return {n.id for n in walk(e) if isinstance(n, Name)}
