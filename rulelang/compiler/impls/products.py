"""Direct vjps of the attention ops: `matmul` of two activations (A @ B, batched), softmax / log-softmax, and
element-wise products (`a * b` of two activations, scaling by a constant: attention scale, layer scale, gates).

Without them these kinds use the generic replay under torch.func; these are plain matmuls, products and reductions.
"""

from __future__ import annotations

import operator
from typing import Any

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
    """`A @ B` with both factors activations of rank >= 2: vjp_A = s @ Bᵀ, vjp_B = Aᵀ @ s (broadcasting undone);
    einsum and other forms: the generic vjp. `vjp_frozen`: the gate held constant (`frozen_product`)."""

    def vjp_frozen(self, lw: Lowerer, op: Op, s: Value, index: int) -> Value:
        return frozen_product(self, lw, op, s, index)

    def direct(self, op: Op) -> bool:
        """Whether the call form has the direct vjp (else the generic one)."""
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
        if not self.direct(op):
            return super().vjp(lw, op, s, index)
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


_MUL_FUNCS = {operator.mul, operator.imul, torch.mul}
_MUL_METHODS = {"mul", "mul_", "__mul__", "__rmul__"}
_DIV_FUNCS = {operator.truediv, torch.div}
_DIV_METHODS = {"div", "__truediv__"}


def mul_vjp(s: torch.Tensor, x: torch.Tensor, other: Any, divide: bool, first: Any = None) -> torch.Tensor:
    """The vjp of `x * other` (or `x / other`, `other` a constant) w.r.t. `x`: `s * other` summed back to x's
    shape, in autograd's order (`s` in the dtype of the op's first input `first` (None: x), the product, aten's
    `sum_to`, then x's dtype)."""
    s = s.to((x if first is None else first).dtype)
    g = s / other if divide else s * other
    if g.shape != x.shape:
        g = g.sum_to_size(x.shape)
    return g.to(x.dtype)


def _floating(n: fx.Node) -> bool:
    meta = n.meta.get("tensor_meta")
    return meta is not None and hasattr(meta, "dtype") and meta.dtype.is_floating_point


@register(Kind.MUL)
class Mul(Generic):
    """`a * b` (two floating activations, or one and a constant) and `a / c` (c a Python number): vjp `s * other`;
    other forms: the generic vjp. `vjp_frozen`: the gate held constant (`frozen_product`)."""

    def vjp_frozen(self, lw: Lowerer, op: Op, s: Value, index: int) -> Value:
        return frozen_product(self, lw, op, s, index)

    def factors(self, op: Op) -> tuple[list[int], bool] | None:
        """(argument positions of the activation inputs, whether the op divides), or None for other call forms."""
        node = op.node
        if op.pick is not None or node.kwargs or len(node.args) != 2:
            return None
        if node.op == "call_function" and node.target in _MUL_FUNCS | _DIV_FUNCS:
            divide = node.target in _DIV_FUNCS
        elif node.op == "call_method" and node.target in _MUL_METHODS | _DIV_METHODS:
            divide = node.target in _DIV_METHODS
        else:
            return None
        live = set(op.inputs)
        positions = [k for k, a in enumerate(node.args) if isinstance(a, fx.Node) and a in live]
        if len(positions) != len(op.inputs) or not all(_floating(n) for n in op.inputs):
            return None
        if divide and positions != [0]:
            return None  # c / x is not a scaling of x
        return positions, divide

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        f = self.factors(op)
        if f is None:
            return super().vjp(lw, op, s, index)
        positions, divide = f
        args = op.node.args
        other = args[1 - positions[index]]
        other_value = lw.value(other) if isinstance(other, fx.Node) else other
        x, first = lw.input_value(op, index), lw.input_value(op, 0)
        return lw.em.call(mul_vjp, s, x, other_value, divide, None if index == 0 else first)


# ------------------------------------------------------------------------------------ products with a gate held
#: activations whose output is a gate in [0, 1] (squeeze-excitation, GLU): what a product multiplies a signal by
_SQUASH_FUNCTIONS = {torch.sigmoid, F.sigmoid, F.hardsigmoid}
_SQUASH_METHODS = {"sigmoid", "sigmoid_"}
_SQUASH_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
#: ops a gate passes through unchanged on its way to the product (the attention weights' dropout, a transpose)
_THROUGH = (Kind.RESHAPE, Kind.DROPOUT, Kind.IDENTITY)


def gate_level(lw: Lowerer, n: fx.Node) -> int:
    """How much a product's factor `n` looks like a gate: 2 for a softmax or sigmoid-type output (attention
    weights, squeeze-excitation), 1 for any other element-wise nonlinearity (a GLU's SiLU/GELU branch), 0 else;
    routing ops (reshape, transpose, dropout, identity) between the producer and the product are looked through."""
    op = lw.og.by_out.get(n)
    while op is not None and op.kind in _THROUGH and len(op.inputs) == 1:
        op = lw.og.by_out.get(op.inputs[0])
    if op is None:
        return 0
    if op.kind == Kind.SOFTMAX:
        return 2
    if op.kind != Kind.ACTIVATION:
        return 0
    node = op.node
    squash = (
        (node.op == "call_function" and node.target in _SQUASH_FUNCTIONS)
        or (node.op == "call_method" and node.target in _SQUASH_METHODS)
        or (node.op == "call_module" and isinstance(module_of(lw, node), _SQUASH_MODULES))
    )
    return 2 if squash else 1


def frozen_weights(lw: Lowerer, op: Op) -> list[float]:
    """Per activation input of a product, the share of its vjp that `vjp_frozen` keeps.

    CP-LRP (Ali et al. 2022) holds the gate of a product constant: the gate gets nothing, the gated signal all of
    the product's relevance (A·V: the attention weights A, already constants there, and the values V;
    x * sigmoid(s): the sigmoid). The gate is the factor with the higher `gate_level`; with no factor singled out
    (q·kᵀ, a * b of two linear maps, x * x) each is held constant half the time: the uniform rule, 1/2 each. One
    activation input (a product with a constant): all of it.
    """
    n = len(op.inputs)
    if n == 1:
        return [1.0]
    levels = [gate_level(lw, x) for x in op.inputs]
    top = max(levels)
    if n != 2 or top == min(levels):
        return [1.0 / n] * n
    return [0.0 if lv == top else 1.0 for lv in levels]


def frozen_product(impl: Generic, lw: Lowerer, op: Op, s: Value, index: int) -> Value:
    """`vjp_frozen` of a product: the vjp w.r.t. input `index` times its `frozen_weights` share (0: a proven 0)."""
    share = frozen_weights(lw, op)[index]
    if share == 0.0:
        return 0.0
    g = impl.vjp(lw, op, s, index)
    return g if share == 1.0 else lw.em.call(operator.truediv, g, 1.0 / share)
