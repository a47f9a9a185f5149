"""Concatenation: the vjp w.r.t. one input is the slice of the relevance that input filled (`narrow`, a view),
instead of a torch.func replay of the whole `cat`."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from ...graph.ir import Op
from ...lang.kinds import Kind
from .. import prims
from .base import Generic, Lowerer, Value, call_arguments
from .registry import register


def _layout(op: Op) -> tuple[int, list[int]] | None:
    """(dim, sizes along dim) of `torch.cat(inputs, dim)` when the list is exactly the op's inputs, else None."""
    node = op.node
    if op.pick is not None or node.op != "call_function" or node.target not in (torch.cat, torch.concat):
        return None
    kw = call_arguments(node, ("tensors", "dim"))
    tensors: Any = kw.get("tensors")
    if not isinstance(tensors, (list, tuple)) or list(tensors) != list(op.inputs) or len(set(tensors)) != len(tensors):
        return None
    if not all(isinstance(t, fx.Node) and "tensor_meta" in t.meta for t in tensors):
        return None
    shapes = [tuple(t.meta["tensor_meta"].shape) for t in tensors]
    dim = kw.get("dim", 0)
    if not isinstance(dim, int) or len({len(s) for s in shapes}) != 1:
        return None
    ndim = len(shapes[0])
    dim = dim + ndim if dim < 0 else dim
    if not 0 <= dim < ndim:
        return None
    return dim, [s[dim] for s in shapes]


@register(Kind.CAT)
class Cat(Generic):
    """torch.cat/concat of distinct activations: direct vjp by `narrow`; stack and other forms use the generic vjp."""

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        layout = _layout(op)
        if layout is None:
            return super().vjp(lw, op, s, index)
        dim, sizes = layout
        return lw.em.call(prims.cat_vjp, s, dim, sum(sizes[:index]), sizes[index])
