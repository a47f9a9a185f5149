"""ReLU: forward `torch.relu`, vjp a mask of the positive outputs (one `threshold_backward`, as autograd)."""

from __future__ import annotations

import torch

from ...graph.ir import Op
from ...lang.kinds import Kind
from .. import prims
from .base import Generic, Lowerer, Value
from .registry import register


@register(Kind.RELU)
class Relu(Generic):
    def forward(self, lw: Lowerer, op: Op) -> Value:
        return lw.em.call(torch.relu, lw.value(op.inputs[0]))

    def layer(self, lw: Lowerer, op: Op, inputs: list[Value], w: Value = None, b: Value = None) -> Value:
        return lw.em.call(torch.relu, inputs[0])

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        # from the ReLU's output, not its input: the pre-activation is then freed after the forward pass
        return lw.em.call(prims.relu_vjp, s, lw.value(op.out))
