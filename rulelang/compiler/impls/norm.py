"""Normalisations (layer, group, instance, RMS norm, F.normalize): the generic replay and vjp, plus `vjp_frozen`, the vjp with
the normalising scale (1/std, 1/rms) held at its forward value — the norm rule of AttnLRP (Achtibat et al. 2024)
and CP-LRP (Ali et al. 2022)."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ...errors import CompileError
from ...graph.ir import Op
from ...lang.kinds import Kind
from .. import prims
from .base import Generic, Lowerer, Value, call_arguments, module_of
from .registry import register

_LAYER_ARGS = ("input", "normalized_shape", "weight", "bias", "eps")
_GROUP_ARGS = ("input", "num_groups", "weight", "bias", "eps")
_RMS_ARGS = ("input", "normalized_shape", "weight", "eps")
_NORMALIZE_ARGS = ("input", "p", "dim", "eps")


def _dims(shape: Any) -> int:
    return 1 if isinstance(shape, int) else len(shape)


@register(Kind.NORM)
class Norm(Generic):
    """Forward and vjp by replay; `vjp_frozen` directly (prims.norm_frozen_vjp)."""

    def frozen_spec(self, lw: Lowerer, op: Op) -> tuple[str, int, Any, Any]:
        """(mode, dims or groups, weight, eps) of the norm, for `prims.norm_frozen_vjp`."""
        node = op.node
        if op.pick is None and node.op == "call_module":
            m = module_of(lw, node)
            weight = lw.param(f"{node.target}.weight") if getattr(m, "weight", None) is not None else None
            if isinstance(m, nn.LayerNorm):
                return "layer", _dims(m.normalized_shape), weight, m.eps
            if isinstance(m, nn.RMSNorm):
                return "rms", _dims(m.normalized_shape), weight, m.eps
            if isinstance(m, nn.GroupNorm):
                return "group", m.num_groups, weight, m.eps
            if isinstance(m, nn.modules.instancenorm._InstanceNorm) and not m.track_running_stats:
                return "group", m.num_features, weight, m.eps
        elif op.pick is None and node.op == "call_function":
            if node.target is F.layer_norm:
                kw = call_arguments(node, _LAYER_ARGS)
                return "layer", _dims(kw["normalized_shape"]), _value(lw, kw.get("weight")), kw.get("eps", 1e-5)
            if node.target is F.rms_norm:
                kw = call_arguments(node, _RMS_ARGS)
                return "rms", _dims(kw["normalized_shape"]), _value(lw, kw.get("weight")), kw.get("eps")
            if node.target is F.group_norm:
                kw = call_arguments(node, _GROUP_ARGS)
                return "group", kw["num_groups"], _value(lw, kw.get("weight")), kw.get("eps", 1e-5)
            if node.target is F.normalize:
                kw = call_arguments(node, _NORMALIZE_ARGS)
                rank = len(op.shape)
                if kw.get("p", 2.0) == 2 and kw.get("dim", 1) in (-1, rank - 1) and kw.get("out") is None:
                    return "l2", 1, None, kw.get("eps", 1e-12)
        raise CompileError(
            f"`vjp_frozen` is not available for node {op.name} ({op.target}): it holds the scale of layer, group, "
            "RMS and instance norms (without running statistics) and of F.normalize (p=2, last dim) constant"
        )

    def vjp_frozen(self, lw: Lowerer, op: Op, s: Value, index: int) -> Value:
        mode, arg, weight, eps = self.frozen_spec(lw, op)
        if mode == "l2":
            return lw.em.call(l2_frozen_vjp, s, lw.input_value(op, 0), eps)
        return lw.em.call(prims.norm_frozen_vjp, s, lw.input_value(op, 0), mode, arg, weight, eps)


def l2_frozen_vjp(s: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The vjp of ``F.normalize(x, p=2, dim=-1, eps=eps)`` with its scale ``1 / max(||x||, eps)`` held constant."""
    return s.to(x.dtype) / x.norm(2, dim=-1, keepdim=True).clamp_min(eps)


def _value(lw: Lowerer, a: Any) -> Any:
    return lw.value(a) if isinstance(a, fx.Node) else a
