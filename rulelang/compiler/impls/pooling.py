"""Max- and average pooling: direct vjps through aten's pooling backward for the 2-d forms."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F

from ...graph.ir import Op
from ...lang.kinds import Kind
from .. import prims
from .base import Generic, Lowerer, Value, call_arguments, module_of
from .registry import register

_MAXPOOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


@register(Kind.MAXPOOL)
class MaxPoolSwitches(Generic):
    """2-d max-pooling: the forward pass keeps its switches, the vjp routes through them."""

    @staticmethod
    def hyper(lw: Lowerer, op: Op) -> dict[str, Any] | None:
        """Kernel, stride, padding, dilation, ceil mode of a 2-d max-pool (None for other forms)."""
        node = op.node
        if op.pick is not None:
            return None
        if node.op == "call_module":
            m = module_of(lw, node)
            if not isinstance(m, torch.nn.MaxPool2d) or m.return_indices:
                return None
            h = dict(
                kernel=m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation, ceil_mode=m.ceil_mode
            )
        elif node.op == "call_function" and node.target is F.max_pool2d:
            kw = call_arguments(node, _MAXPOOL_ARGS)
            if kw.get("return_indices"):
                return None
            h = dict(
                kernel=kw["kernel_size"],
                stride=kw.get("stride") or kw["kernel_size"],
                padding=kw.get("padding", 0),
                dilation=kw.get("dilation", 1),
                ceil_mode=kw.get("ceil_mode", False),
            )
        else:
            return None
        if h["stride"] is None:
            h["stride"] = h["kernel"]
        return {k: (prims.pair(v) if k != "ceil_mode" else v) for k, v in h.items()}

    def forward(self, lw: Lowerer, op: Op) -> Value:
        h = self.hyper(lw, op)
        if h is None:
            return super().forward(lw, op)
        both = lw.em.call(
            prims.max_pool2d_indices,
            lw.value(op.inputs[0]),
            h["kernel"],
            h["stride"],
            h["padding"],
            h["dilation"],
            h["ceil_mode"],
        )
        lw.aux[(lw.part, op.name)] = lw.em.call(operator.getitem, both, 1)
        return lw.em.call(operator.getitem, both, 0)

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        h = self.hyper(lw, op)
        if h is None:
            return super().vjp(lw, op, s, index)
        return lw.em.call(
            prims.max_pool2d_vjp,
            s,
            lw.input_value(op, 0),
            lw.aux[(lw.part, op.name)],
            h["kernel"],
            h["stride"],
            h["padding"],
            h["dilation"],
            h["ceil_mode"],
        )


@register(Kind.AVGPOOL)
class AvgPool(Generic):
    """2-d (adaptive) average pooling: the vjp is aten's pooling backward."""

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        node = op.node
        x = lw.input_value(op, 0)
        if op.pick is None and node.op == "call_module":
            m = module_of(lw, node)
            if isinstance(m, torch.nn.AdaptiveAvgPool2d):
                return lw.em.call(prims.adaptive_avg_pool2d_vjp, s, x)
            if isinstance(m, torch.nn.AvgPool2d):
                return lw.em.call(
                    prims.avg_pool2d_vjp,
                    s,
                    x,
                    m.kernel_size,
                    m.stride or m.kernel_size,
                    m.padding,
                    m.ceil_mode,
                    m.count_include_pad,
                    m.divisor_override,
                )
        if op.pick is None and node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
            return lw.em.call(prims.adaptive_avg_pool2d_vjp, s, x)
        return super().vjp(lw, op, s, index)
