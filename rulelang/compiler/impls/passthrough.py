"""Dropout and identity: nothing at explanation time."""

from __future__ import annotations

from ...graph.ir import Op
from ...lang.kinds import Kind
from .base import Generic, Lowerer, Value
from .registry import register


@register(Kind.DROPOUT, Kind.IDENTITY)
class Passthrough(Generic):
    def forward(self, lw: Lowerer, op: Op) -> Value:
        return lw.value(op.inputs[0])

    def layer(self, lw: Lowerer, op: Op, inputs: list[Value], w: Value = None, b: Value = None) -> Value:
        return inputs[0]

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        return s
