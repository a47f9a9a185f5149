"""conv and dense: weight `w`, bias `b` (a BatchNorm folded in when it follows)."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from ...graph.ir import Op
from ...lang.kinds import Kind
from .. import prims
from .affine import batch_norm_parts
from .base import Generic, Lowerer, Value, call_arguments, module_of
from .registry import register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_LINEAR_ARGS = ("input", "weight", "bias")


@register(Kind.CONV, Kind.DENSE)
class ConvDense(Generic):
    """conv and dense: weight `w`, bias `b` (BatchNorm folded in when it follows)."""

    parametric = True

    def handles(self, op: Op) -> bool:
        return op.pick is None

    def hyper(self, lw: Lowerer, op: Op) -> dict[str, Any]:
        """Where the weight and bias live (attribute path or fx node) and, for conv, its hyper-parameters."""
        node = op.node
        if node.op == "call_module":
            m = module_of(lw, node)
            h: dict[str, Any] = {"weight": f"{node.target}.weight"}
            h["bias"] = f"{node.target}.bias" if m.bias is not None else None
            if op.kind == Kind.CONV:
                h.update(
                    stride=tuple(m.stride),
                    padding=m.padding if isinstance(m.padding, str) else tuple(m.padding),
                    dilation=tuple(m.dilation),
                    groups=m.groups,
                    dim=m.weight.dim() - 2,
                )
            return h
        kw = call_arguments(node, _CONV_ARGS if op.kind == Kind.CONV else _LINEAR_ARGS)
        h = {"weight": kw["weight"], "bias": kw.get("bias")}  # fx nodes or tensors
        if op.kind == Kind.CONV:
            w = kw["weight"]
            dim = len(w.meta["tensor_meta"].shape) - 2 if isinstance(w, fx.Node) else w.dim() - 2
            h.update(
                stride=kw.get("stride", 1),
                padding=kw.get("padding", 0),
                dilation=kw.get("dilation", 1),
                groups=kw.get("groups", 1),
                dim=dim,
            )
        return h

    def params(self, lw: Lowerer, op: Op) -> dict[str, Value]:
        h = self.hyper(lw, op)
        w = lw.param(h["weight"])
        b = lw.param(h["bias"]) if h["bias"] is not None else None
        if op.fold is not None:
            gamma, beta, mean, var, eps = batch_norm_parts(lw, op.fold)
            scale = lw.em.call(prims.bn_scale, gamma, var, eps)
            w = lw.em.call(prims.fold_weight, w, scale)
            b = lw.em.call(prims.fold_bias, b, mean, scale, beta)
        return {"w": w, "b": 0.0 if b is None else b}

    def forward(self, lw: Lowerer, op: Op) -> Value:
        if op.fold is None:
            return self.replay(lw, op, None)
        p = lw.params_of(op)
        return self.layer(lw, op, [lw.value(op.inputs[0])], p["w"], p["b"])

    def layer(self, lw: Lowerer, op: Op, inputs: list[Value], w: Value = None, b: Value = None) -> Value:
        p = lw.params_of(op)
        w = p["w"] if w is None else w
        b = p["b"] if b is None else b
        bias = None if (not isinstance(b, fx.Node) and b == 0) else b
        if op.kind == Kind.DENSE:
            return lw.em.call(F.linear, inputs[0], w, bias)
        h = self.hyper(lw, op)
        return lw.em.call(_CONV[h["dim"]], inputs[0], w, bias, h["stride"], h["padding"], h["dilation"], h["groups"])

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        w = lw.params_of(op)["w"] if w is None else w
        if op.kind == Kind.DENSE:
            return lw.em.call(torch.matmul, s, w)
        h = self.hyper(lw, op)
        dim = h["dim"]

        def tup(v: Any) -> tuple[Any, ...]:
            return tuple(v) if isinstance(v, (tuple, list)) else (v,) * dim

        padding = h["padding"] if isinstance(h["padding"], str) else tup(h["padding"])
        return lw.em.call(
            prims.conv_vjp, s, lw.input_value(op, 0), w, tup(h["stride"]), padding, tup(h["dilation"]), h["groups"]
        )
