"""Per-kind lowering of the rule primitives: each op kind says how to emit its forward pass, its parameters,
`layer(t, w=, b=)` and `vjp(s, w=)` (JAX-style table of per-primitive rules).

Direct ops where they exist (conv -> transposed conv via `convolution_backward`, linear -> matmul, ReLU -> mask);
`torch.func.vjp` over a replay of the original call as the general fallback.
"""

from __future__ import annotations

import copy
import operator
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..graph.catalog import INPLACE_FUNCTIONS, INPLACE_METHODS
from ..graph.ir import Op
from . import prims

if TYPE_CHECKING:
    from .lower import Lowering

Value = Any

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_LINEAR_ARGS = ("input", "weight", "bias")
_MAXPOOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def _call_arguments(node: fx.Node, names: tuple[str, ...]) -> dict[str, Any]:
    """A functional call's arguments by name (F.conv2d & co. have overloads that fx cannot normalise)."""
    kw = dict(zip(names, node.args))
    kw.update(node.kwargs)
    return kw


def _module(lw: Lowering, node: fx.Node) -> torch.nn.Module:
    return lw.gm.get_submodule(node.target)


class Generic:
    """Any op: forward by replaying the traced call; vjp by torch.func.vjp of that replay."""

    parametric = False

    def forward(self, lw: Lowering, op: Op) -> Value:
        return self.replay(lw, op, None)

    def params(self, lw: Lowering, op: Op) -> dict[str, Value]:
        return {}

    def replay(self, lw: Lowering, op: Op, inputs: list[Value] | None) -> Value:
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

    def layer(self, lw: Lowering, op: Op, inputs: list[Value], w: Value = None, b: Value = None) -> Value:
        return self.replay(lw, op, inputs)

    def vjp(self, lw: Lowering, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        fn, values = lw.vjp_function(op)
        grads = lw.em.call(fn, s, *values)
        return lw.em.call(operator.getitem, grads, index)


class Relu(Generic):
    def forward(self, lw: Lowering, op: Op) -> Value:
        return lw.em.call(torch.relu, lw.value(op.inputs[0]))

    def layer(self, lw, op, inputs, w=None, b=None):
        return lw.em.call(torch.relu, inputs[0])

    def vjp(self, lw, op, s, index, w=None, b=None):
        mask = lw.em.call(operator.gt, lw.input_value(op, 0), 0)
        return lw.em.call(torch.where, mask, s, 0.0)


class Passthrough(Generic):
    """Dropout and identity: nothing at explanation time."""

    def forward(self, lw, op):
        return lw.value(op.inputs[0])

    def layer(self, lw, op, inputs, w=None, b=None):
        return inputs[0]

    def vjp(self, lw, op, s, index, w=None, b=None):
        return s


class Add(Generic):
    def vjp(self, lw, op, s, index, w=None, b=None):
        node = op.node
        if (
            op.pick is None
            and not node.kwargs
            and len(op.inputs) == 2
            and all(tuple(x.meta["tensor_meta"].shape) == op.shape for x in op.inputs)
        ):
            return s
        return super().vjp(lw, op, s, index)


class Linear(Generic):
    """conv and dense: weight `w`, bias `b` (BatchNorm folded in when it follows)."""

    parametric = True

    def hyper(self, lw: Lowering, op: Op) -> dict[str, Any]:
        node = op.node
        if node.op == "call_module":
            m = _module(lw, node)
            h = {"weight": f"{node.target}.weight", "bias": f"{node.target}.bias" if m.bias is not None else None}
            if op.kind == "conv":
                h.update(
                    stride=tuple(m.stride),
                    padding=m.padding if isinstance(m.padding, str) else tuple(m.padding),
                    dilation=tuple(m.dilation),
                    groups=m.groups,
                    dim=m.weight.dim() - 2,
                )
            return h
        kw = _call_arguments(node, _CONV_ARGS if op.kind == "conv" else _LINEAR_ARGS)
        h = {"weight": kw["weight"], "bias": kw.get("bias")}
        if op.kind == "conv":
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

    def params(self, lw, op):
        h = self.hyper(lw, op)
        w = lw.param(h["weight"])
        b = lw.param(h["bias"]) if h["bias"] is not None else None
        if op.fold is not None:
            bn = _module(lw, op.fold)
            t = op.fold.target
            gamma = lw.param(f"{t}.weight") if bn.weight is not None else None
            beta = lw.param(f"{t}.bias") if bn.bias is not None else None
            scale = lw.em.call(prims.bn_scale, gamma, lw.param(f"{t}.running_var"), bn.eps)
            w = lw.em.call(prims.fold_weight, w, scale)
            b = lw.em.call(prims.fold_bias, b, lw.param(f"{t}.running_mean"), scale, beta)
        return {"w": w, "b": 0.0 if b is None else b}

    def forward(self, lw, op):
        if op.fold is None:
            return self.replay(lw, op, None)
        p = lw.params_of(op)
        return self.layer(lw, op, [lw.value(op.inputs[0])], p["w"], p["b"])

    def layer(self, lw, op, inputs, w=None, b=None):
        p = lw.params_of(op)
        w = p["w"] if w is None else w
        b = p["b"] if b is None else b
        bias = None if (not isinstance(b, fx.Node) and b == 0) else b
        if op.kind == "dense":
            return lw.em.call(F.linear, inputs[0], w, bias)
        h = self.hyper(lw, op)
        return lw.em.call(_CONV[h["dim"]], inputs[0], w, bias, h["stride"], h["padding"], h["dilation"], h["groups"])

    def vjp(self, lw, op, s, index, w=None, b=None):
        w = lw.params_of(op)["w"] if w is None else w
        if op.kind == "dense":
            return lw.em.call(torch.matmul, s, w)
        h = self.hyper(lw, op)
        dim = h["dim"]
        tup = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * dim
        padding = h["padding"] if isinstance(h["padding"], str) else tup(h["padding"])
        return lw.em.call(
            prims.conv_vjp, s, lw.input_value(op, 0), w, tup(h["stride"]), padding, tup(h["dilation"]), h["groups"]
        )


class Affine(Generic):
    """An unfoldable eval-mode BatchNorm: `w` = gamma/sqrt(var+eps) and `b` = beta - mean*w per channel."""

    parametric = True

    def params(self, lw, op):
        bn = _module(lw, op.node)
        t = op.node.target
        gamma = lw.param(f"{t}.weight") if bn.weight is not None else None
        beta = lw.param(f"{t}.bias") if bn.bias is not None else None
        scale = lw.em.call(prims.bn_scale, gamma, lw.param(f"{t}.running_var"), bn.eps)
        return {"w": scale, "b": lw.em.call(prims.fold_bias, None, lw.param(f"{t}.running_mean"), scale, beta)}

    def forward(self, lw, op):
        if op.node.op != "call_module":
            return self.replay(lw, op, None)
        return self.layer(lw, op, [lw.value(op.inputs[0])])

    def layer(self, lw, op, inputs, w=None, b=None):
        p = lw.params_of(op)
        return lw.em.call(prims.affine, inputs[0], p["w"] if w is None else w, p["b"] if b is None else b)

    def vjp(self, lw, op, s, index, w=None, b=None):
        return lw.em.call(prims.affine, s, lw.params_of(op)["w"] if w is None else w, 0.0)


class MaxPool2d(Generic):
    """2-d max-pooling: the forward pass keeps its switches, the vjp routes through them."""

    @staticmethod
    def hyper(lw: Lowering, op: Op) -> dict[str, Any] | None:
        node = op.node
        if op.pick is not None:
            return None
        if node.op == "call_module":
            m = _module(lw, node)
            if not isinstance(m, torch.nn.MaxPool2d) or m.return_indices:
                return None
            h = dict(
                kernel=m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation, ceil_mode=m.ceil_mode
            )
        elif node.op == "call_function" and node.target is F.max_pool2d:
            kw = _call_arguments(node, _MAXPOOL_ARGS)
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

    def forward(self, lw, op):
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

    def vjp(self, lw, op, s, index, w=None, b=None):
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


class AvgPool(Generic):
    """2-d (adaptive) average pooling: the vjp is aten's pooling backward."""

    def vjp(self, lw, op, s, index, w=None, b=None):
        node = op.node
        x = lw.input_value(op, 0)
        if op.pick is None and node.op == "call_module":
            m = _module(lw, node)
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


_RESHAPES = {
    ("call_method", "view"),
    ("call_method", "reshape"),
    ("call_method", "flatten"),
    ("call_function", torch.flatten),
    ("call_function", torch.reshape),
}


class Reshape(Generic):
    """view/reshape/flatten: the vjp reshapes back; other routing ops use the generic vjp."""

    def vjp(self, lw, op, s, index, w=None, b=None):
        node = op.node
        if op.pick is None and (
            (node.op, node.target) in _RESHAPES
            or (node.op == "call_module" and isinstance(_module(lw, node), torch.nn.Flatten))
        ):
            return lw.em.method("reshape_as", s, lw.input_value(op, 0))
        return super().vjp(lw, op, s, index)


_GENERIC = Generic()
IMPLS: dict[str, Generic] = {
    "relu": Relu(),
    "dropout": Passthrough(),
    "identity": Passthrough(),
    "add": Add(),
    "conv": Linear(),
    "dense": Linear(),
    "affine": Affine(),
    "maxpool": MaxPool2d(),
    "avgpool": AvgPool(),
    "reshape": Reshape(),
}


def impl_for(op: Op) -> Generic:
    if op.kind == "affine" and op.node.op != "call_module":
        return _GENERIC
    if op.kind in ("conv", "dense") and op.pick is not None:
        return _GENERIC
    return IMPLS.get(op.kind, _GENERIC)


def inplace_free(module: torch.nn.Module) -> torch.nn.Module | None:
    """A shallow copy with `inplace=False` when the module would overwrite its input, else None."""
    if getattr(module, "inplace", False):
        clone = copy.copy(module)
        clone.inplace = False
        return clone
    return None
