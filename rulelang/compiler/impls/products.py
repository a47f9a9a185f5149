"""Direct vjps of the attention ops: `matmul` of two activations (A @ B, batched) and softmax / log-softmax.

Without them both kinds use the generic replay under torch.func; these are plain matmuls and reductions.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ...graph.ir import Op
from ...lang.kinds import Kind
from .. import prims
from .base import Generic, Lowerer, Value, module_of
from .registry import register

_MATMULS = {("call_function", torch.matmul), ("call_function", operator.matmul), ("call_function", torch.bmm)}
_MATMUL_METHODS = {"matmul", "bmm", "__matmul__"}


def _rank(n: fx.Node) -> int:
    meta = n.meta.get("tensor_meta")
    return len(meta.shape) if meta is not None and hasattr(meta, "shape") else 0


@register(Kind.MATMUL)
class MatMul(Generic):
    """`A @ B` with both factors activations of rank >= 2: vjp_A = s @ Bᵀ, vjp_B = Aᵀ @ s (broadcasting undone)."""

    def handles(self, op: Op) -> bool:
        node = op.node
        form = (node.op, node.target) in _MATMULS or (node.op == "call_method" and node.target in _MATMUL_METHODS)
        args = node.args[:2]
        return (
            form
            and op.pick is None
            and not node.kwargs
            and len(node.args) == 2
            and list(args) == list(op.inputs)
            and all(isinstance(a, fx.Node) and _rank(a) >= 2 for a in args)
        )

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        a, bb = lw.input_value(op, 0), lw.input_value(op, 1)
        em = lw.em
        if index == 0:
            g = em.call(torch.matmul, s, em.method("transpose", bb, -2, -1))
            return em.call(prims.sum_to, g, a)
        g = em.call(torch.matmul, em.method("transpose", a, -2, -1), s)
        return em.call(prims.sum_to, g, bb)


def softmax_vjp(s: torch.Tensor, y: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
    """The vjp of softmax (y = softmax(x)) or log-softmax (y = log_softmax(x)) along `dim`, from the output."""
    s = s.to(y.dtype)
    if log:
        return s - torch.exp(y) * s.sum(dim, keepdim=True)
    return y * (s - (s * y).sum(dim, keepdim=True))


_SOFTMAX_FUNCS = {F.softmax: False, torch.softmax: False, F.log_softmax: True, torch.log_softmax: True}
_SOFTMAX_METHODS = {"softmax": False, "log_softmax": True}


@register(Kind.SOFTMAX)
class SoftmaxVjp(Generic):
    """softmax / log-softmax over one dim (no dtype cast): the vjp from the forward output."""

    def spec(self, lw: Lowerer, op: Op) -> tuple[int, bool] | None:
        node = op.node
        if op.pick is not None:
            return None
        if node.op == "call_module":
            m = module_of(lw, node)
            if type(m) in (nn.Softmax, nn.LogSoftmax) and m.dim is not None:
                return m.dim, isinstance(m, nn.LogSoftmax)
            return None
        if node.op == "call_function" and node.target in _SOFTMAX_FUNCS:
            log = _SOFTMAX_FUNCS[node.target]
        elif node.op == "call_method" and node.target in _SOFTMAX_METHODS:
            log = _SOFTMAX_METHODS[node.target]
        else:
            return None
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        if not isinstance(dim, int) or node.kwargs.get("dtype") is not None or len(node.args) > 2:
            return None
        return dim, log

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        spec = self.spec(lw, op)
        if spec is None:
            return super().vjp(lw, op, s, index)
        return lw.em.call(softmax_vjp, s, lw.value(op.out), spec[0], spec[1])
