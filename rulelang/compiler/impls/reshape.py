"""view/reshape/flatten: the vjp reshapes back; other routing ops (permute, pad, getitem, ...) use the generic
vjp."""

from __future__ import annotations

import torch

from ...graph.ir import Op
from ...lang.kinds import Kind
from .base import Generic, Lowerer, Value, module_of
from .registry import register

_RESHAPES = {
    ("call_method", "view"),
    ("call_method", "reshape"),
    ("call_method", "flatten"),
    ("call_function", torch.flatten),
    ("call_function", torch.reshape),
}


@register(Kind.RESHAPE)
class Reshape(Generic):
    """view/reshape/flatten: the vjp reshapes back; other routing ops use the generic vjp."""

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        node = op.node
        if op.pick is None and (
            (node.op, node.target) in _RESHAPES
            or (node.op == "call_module" and isinstance(module_of(lw, node), torch.nn.Flatten))
        ):
            return lw.em.method("reshape_as", s, lw.input_value(op, 0))
        return super().vjp(lw, op, s, index)
