"""Element-wise nonlinearities (`activation`): direct vjps for GELU, SiLU, sigmoid, tanh, hardswish, hardsigmoid
and Mish, the formulas autograd runs (so they equal the generic torch.func replay bit for bit); the other
activations (ELU, softplus, leaky ReLU, PReLU, ...) use the generic vjp."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ...graph.ir import Op
from ...lang.kinds import Kind
from .base import Generic, Lowerer, Value, module_of
from .registry import register


def gelu_vjp(s: torch.Tensor, x: torch.Tensor, approximate: str) -> torch.Tensor:
    return torch.ops.aten.gelu_backward(s.to(x.dtype), x, approximate=approximate)


def sigmoid_vjp(s: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """From the output y = sigmoid(x): s * y * (1 - y)."""
    return torch.ops.aten.sigmoid_backward(s.to(x.dtype), y)


def tanh_vjp(s: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """From the output y = tanh(x): s * (1 - y²)."""
    return torch.ops.aten.tanh_backward(s.to(x.dtype), y)


def silu_vjp(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """s * sigma(x) * (1 + x * (1 - sigma(x))), in the order autograd's differentiable SiLU backward computes it."""
    sig = x.sigmoid()
    return s.to(x.dtype) * sig * (1.0 + x * (1.0 - sig))


def mish_vjp(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """s * (tanh(sp) + x * sigma(x) * (1 - tanh(sp)²)), sp = log1p(exp(x)): autograd's differentiable Mish backward."""
    sig = x.sigmoid()
    tsp = x.exp().log1p().tanh()
    return s.to(x.dtype) * (tsp + x * sig * (1.0 - tsp * tsp))


def hardswish_vjp(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.hardswish_backward(s.to(x.dtype), x)


def hardsigmoid_vjp(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.hardsigmoid_backward(s.to(x.dtype), x)


#: call form -> activation name
_FUNCTIONS: dict[Any, str] = {
    F.gelu: "gelu",
    F.silu: "silu",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    F.hardswish: "hardswish",
    F.hardsigmoid: "hardsigmoid",
    F.mish: "mish",
}
_METHODS = {"sigmoid": "sigmoid", "sigmoid_": "sigmoid", "tanh": "tanh", "tanh_": "tanh"}
_MODULES: tuple[tuple[type, str], ...] = (
    (nn.GELU, "gelu"),
    (nn.SiLU, "silu"),
    (nn.Sigmoid, "sigmoid"),
    (nn.Tanh, "tanh"),
    (nn.Hardswish, "hardswish"),
    (nn.Hardsigmoid, "hardsigmoid"),
    (nn.Mish, "mish"),
)
_BY_INPUT = {"silu": silu_vjp, "mish": mish_vjp, "hardswish": hardswish_vjp, "hardsigmoid": hardsigmoid_vjp}
_BY_OUTPUT = {"sigmoid": sigmoid_vjp, "tanh": tanh_vjp}
#: the keyword arguments (besides the input) each functional form may carry without changing the function
_HARMLESS = {"inplace"}


@register(Kind.ACTIVATION)
class Activation(Generic):
    """Element-wise nonlinearities: the direct vjp where the function is one of the above, else the generic one."""

    def form(self, lw: Lowerer, op: Op) -> tuple[str, str] | None:
        """(activation name, GELU's `approximate`) of the call, or None for call forms left to the generic vjp."""
        node = op.node
        if op.pick is not None or len(op.inputs) != 1:
            return None
        if node.op == "call_module":
            m = module_of(lw, node)
            for cls, name in _MODULES:
                if type(m) is cls:
                    return name, str(getattr(m, "approximate", "none"))
            return None
        if not node.args or node.args[0] is not op.inputs[0]:
            return None
        if node.op == "call_method":
            method = _METHODS.get(str(node.target))
            return (method, "none") if method is not None and len(node.args) == 1 and not node.kwargs else None
        found = _FUNCTIONS.get(node.target) if node.op == "call_function" else None
        if found is None:
            return None
        name = found
        extra = dict(node.kwargs)
        if name == "gelu":
            approximate = extra.pop("approximate", node.args[1] if len(node.args) > 1 else "none")
            positional = node.args[2:]
        else:
            approximate, positional = "none", node.args[1:]
        if (
            not isinstance(approximate, str)
            or set(extra) - _HARMLESS
            or any(isinstance(a, fx.Node) for a in positional)
        ):
            return None
        return name, approximate

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        form = self.form(lw, op)
        if form is None:
            return super().vjp(lw, op, s, index)
        name, approximate = form
        x, em = lw.input_value(op, 0), lw.em
        if name == "gelu":
            return em.call(gelu_vjp, s, x, approximate)
        if name in _BY_OUTPUT:
            return em.call(_BY_OUTPUT[name], s, x, lw.value(op.out))
        return em.call(_BY_INPUT[name], s, x)
