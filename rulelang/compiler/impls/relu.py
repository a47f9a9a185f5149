"""ReLU: forward `torch.relu`, vjp a mask of the positive inputs."""

from __future__ import annotations

import operator

import torch

from ...graph.ir import Op
from ...lang.kinds import Kind
from .base import Generic, Lowerer, Value
from .registry import register


@register(Kind.RELU)
class Relu(Generic):
    def forward(self, lw: Lowerer, op: Op) -> Value:
        return lw.em.call(torch.relu, lw.value(op.inputs[0]))

    def layer(self, lw: Lowerer, op: Op, inputs: list[Value], w: Value = None, b: Value = None) -> Value:
        return lw.em.call(torch.relu, inputs[0])

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        mask = lw.em.call(operator.gt, lw.input_value(op, 0), 0)
        return lw.em.call(torch.where, mask, s, 0.0)
