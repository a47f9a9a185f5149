"""The generic implementation every kind falls back to, and helpers shared by the implementations."""

from __future__ import annotations

import copy
import operator
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.fx as fx

from ...graph.catalog import INPLACE_FUNCTIONS, INPLACE_METHODS
from ...graph.ir import Op
from ...lang.kinds import Kind

if TYPE_CHECKING:
    from ..lower import Lowering as Lowerer
else:
    Lowerer = Any

Value = Any


def call_arguments(node: fx.Node, names: tuple[str, ...]) -> dict[str, Any]:
    """A functional call's arguments by name (F.conv2d & co. have overloads that fx cannot normalise)."""
    kw = dict(zip(names, node.args))
    kw.update(node.kwargs)
    return kw


def module_of(lw: Lowerer, node: fx.Node) -> Any:
    """The submodule a `call_module` node calls."""
    return lw.gm.get_submodule(str(node.target))


class Generic:
    """Any op: forward by replaying the traced call; vjp by torch.func.vjp of that replay."""

    parametric: ClassVar[bool] = False
    kinds: ClassVar[tuple[Kind, ...]] = ()

    def handles(self, op: Op) -> bool:
        """Whether this implementation covers the op's call form (else the generic one lowers it)."""
        return True

    def forward(self, lw: Lowerer, op: Op) -> Value:
        return self.replay(lw, op, None)

    def params(self, lw: Lowerer, op: Op) -> dict[str, Value]:
        return {}

    def replay(self, lw: Lowerer, op: Op, inputs: list[Value] | None) -> Value:
        """The op's call with its activation inputs replaced by `inputs` (None: the forward values)."""
        node = op.node
        slots = iter(inputs) if inputs is not None else None
        live = set(op.inputs)

        def arg(n: fx.Node) -> Value:
            if slots is not None and n in live:
                return next(slots)
            return lw.value(n)

        target, kind = node.target, node.op
        if kind == "call_function":
            target = INPLACE_FUNCTIONS.get(target, target)
        elif kind == "call_method":
            target = INPLACE_METHODS.get(target, target)
        elif kind == "call_module":
            target = lw.module_target(node)
        out = lw.em.copy(node, arg, target=target)
        if op.pick is not None:
            out = lw.em.call(operator.getitem, out, op.pick)
        return out

    def layer(self, lw: Lowerer, op: Op, inputs: list[Value], w: Value = None, b: Value = None) -> Value:
        return self.replay(lw, op, inputs)

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        fn, values = lw.vjp_function(op)
        grads = lw.em.call(fn, s, *values)
        return lw.em.call(operator.getitem, grads, index)

    def vjp_frozen(self, lw: Lowerer, op: Op, s: Value, index: int) -> Value:
        """The vjp with the op's input-derived statistics held constant (norms override); else `vjp`."""
        return self.vjp(lw, op, s, index)


def inplace_free(module: torch.nn.Module) -> torch.nn.Module | None:
    """A shallow copy with `inplace=False` when the module would overwrite its input, else None."""
    if getattr(module, "inplace", False):
        clone = copy.copy(module)
        clone.inplace = False  # type: ignore[assignment]
        return clone
    return None
