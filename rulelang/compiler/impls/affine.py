"""An unfoldable eval-mode BatchNorm: `w` = gamma/sqrt(var+eps) and `b` = beta - mean*w per channel."""

from __future__ import annotations

import torch.fx as fx
import torch.nn.functional as F

from ...graph.catalog import batch_norm_arguments
from ...graph.ir import Op
from ...lang.kinds import Kind
from .. import prims
from .base import Generic, Lowerer, Value, module_of
from .registry import register


def batch_norm_parts(lw: Lowerer, node: fx.Node) -> tuple[Value, Value, Value, Value, float]:
    """(gamma, beta, running mean, running var, eps) of a BatchNorm module call or an eval-form F.batch_norm call
    (gamma/beta None when absent)."""
    if node.op == "call_module":
        bn = module_of(lw, node)
        t = node.target
        gamma = lw.param(f"{t}.weight") if bn.weight is not None else None
        beta = lw.param(f"{t}.bias") if bn.bias is not None else None
        return gamma, beta, lw.param(f"{t}.running_mean"), lw.param(f"{t}.running_var"), bn.eps
    kw = batch_norm_arguments(node)
    val = lambda a: None if a is None else lw.param(a)  # noqa: E731
    return val(kw["weight"]), val(kw["bias"]), val(kw["running_mean"]), val(kw["running_var"]), kw["eps"]


def _is_functional(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target is F.batch_norm


@register(Kind.AFFINE)
class Affine(Generic):
    """An unfoldable eval-mode BatchNorm: a module call or an eval-form F.batch_norm (timm's BatchNormAct2d)."""

    parametric = True

    def handles(self, op: Op) -> bool:
        return op.pick is None and (op.node.op == "call_module" or _is_functional(op.node))

    def params(self, lw: Lowerer, op: Op) -> dict[str, Value]:
        gamma, beta, mean, var, eps = batch_norm_parts(lw, op.node)
        scale = lw.em.call(prims.bn_scale, gamma, var, eps)
        return {"w": scale, "b": lw.em.call(prims.fold_bias, None, mean, scale, beta)}

    def forward(self, lw: Lowerer, op: Op) -> Value:
        return self.layer(lw, op, [lw.value(op.inputs[0])])

    def layer(self, lw: Lowerer, op: Op, inputs: list[Value], w: Value = None, b: Value = None) -> Value:
        p = lw.params_of(op)
        return lw.em.call(prims.affine, inputs[0], p["w"] if w is None else w, p["b"] if b is None else b)

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        return lw.em.call(prims.affine, s, lw.params_of(op)["w"] if w is None else w, 0.0)
