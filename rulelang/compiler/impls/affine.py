"""An unfoldable eval-mode BatchNorm: `w` = gamma/sqrt(var+eps) and `b` = beta - mean*w per channel."""

from __future__ import annotations

from ...graph.ir import Op
from ...lang.kinds import Kind
from .. import prims
from .base import Generic, Lowerer, Value, module_of
from .registry import register


@register(Kind.AFFINE)
class Affine(Generic):
    """An unfoldable eval-mode BatchNorm module (functional batch norms use the generic replay)."""

    parametric = True

    def handles(self, op: Op) -> bool:
        return op.node.op == "call_module"

    def params(self, lw: Lowerer, op: Op) -> dict[str, Value]:
        bn = module_of(lw, op.node)
        t = op.node.target
        gamma = lw.param(f"{t}.weight") if bn.weight is not None else None
        beta = lw.param(f"{t}.bias") if bn.bias is not None else None
        scale = lw.em.call(prims.bn_scale, gamma, lw.param(f"{t}.running_var"), bn.eps)
        return {"w": scale, "b": lw.em.call(prims.fold_bias, None, lw.param(f"{t}.running_mean"), scale, beta)}

    def forward(self, lw: Lowerer, op: Op) -> Value:
        if op.node.op != "call_module":
            return self.replay(lw, op, None)
        return self.layer(lw, op, [lw.value(op.inputs[0])])

    def layer(self, lw: Lowerer, op: Op, inputs: list[Value], w: Value = None, b: Value = None) -> Value:
        p = lw.params_of(op)
        return lw.em.call(prims.affine, inputs[0], p["w"] if w is None else w, p["b"] if b is None else b)

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        return lw.em.call(prims.affine, s, lw.params_of(op)["w"] if w is None else w, 0.0)
