"""Routing ops (views and copies of their input): direct vjps instead of a torch.func replay.

- view / reshape / flatten / unflatten / squeeze / unsqueeze / contiguous / view_as / reshape_as: reshape back;
- permute -> the inverse permutation; transpose / swapaxes -> the same transpose; movedim -> the opposite move;
- expand / expand_as -> summed back to the input's shape (aten's `sum_to`, what autograd runs);
- getitem with basic indexing (ints, slices, None, ...), narrow, chunk / split / unbind (one output each): a zero
  tensor with the slice that output came from set to `s`.

Each equals the generic vjp bit for bit (tests/compiler/test_reshape_vjps.py); padding, roll, channel shuffle,
advanced indexing and any other call form use the generic vjp.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx

from ...graph.ir import Op
from ...lang.kinds import Kind
from .. import prims
from .base import Generic, Lowerer, Value, module_of
from .registry import register

#: call forms whose vjp is `s.reshape(x.shape)` (the input's elements, in order, reshaped)
_RESHAPE_METHODS = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "contiguous", "view_as"}
_RESHAPE_METHODS |= {"reshape_as"}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten}
_RESHAPE_MODULES = (torch.nn.Flatten, torch.nn.Unflatten)
#: call forms taking a second tensor for its shape only
_LIKE_METHODS = {"view_as", "reshape_as", "expand_as"}

#: call forms returning views of one part of the input (the vjp fills that part of a zero tensor)
_PART_METHODS = {"narrow", "chunk", "split", "unbind"}
_PART_FUNCTIONS: dict[Any, str] = {
    torch.narrow: "narrow",
    torch.chunk: "chunk",
    torch.split: "split",
    torch.unbind: "unbind",
}
_PART_FUNCTION_BY_NAME: dict[str, Callable[..., Any]] = {name: fn for fn, name in _PART_FUNCTIONS.items()}


def reshape_vjp(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The vjp of a reshape-type op: `s` reshaped back to the input's shape."""
    return s.to(x.dtype).reshape(x.shape)


def permute_vjp(s: torch.Tensor, x: torch.Tensor, inverse: tuple[int, ...]) -> torch.Tensor:
    """The vjp of `x.permute(dims)`: `s` permuted by the inverse permutation."""
    return s.to(x.dtype).permute(inverse)


def transpose_vjp(s: torch.Tensor, x: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """The vjp of `x.transpose(a, b)`: the same transpose of `s`."""
    return s.to(x.dtype).transpose(a, b)


def movedim_vjp(s: torch.Tensor, x: torch.Tensor, source: Any, destination: Any) -> torch.Tensor:
    """The vjp of `x.movedim(source, destination)`: `s` moved back."""
    return s.to(x.dtype).movedim(destination, source)


def expand_vjp(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The vjp of an expand: `s` summed over the expanded dims (aten's `sum_to`, as autograd reduces)."""
    s = s.to(x.dtype)
    return s if s.shape == x.shape else s.sum_to_size(x.shape)


def _basic(index: Any) -> bool:
    """Whether a getitem index is basic (ints, slices, None, Ellipsis): the result is a view of the input."""
    parts = index if isinstance(index, tuple) else (index,)
    for p in parts:
        if isinstance(p, slice):
            if not all(
                v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in (p.start, p.stop, p.step)
            ):
                return False
        elif not (p is None or p is Ellipsis or (isinstance(p, int) and not isinstance(p, bool))):
            return False
    return True


def getitem_vjp(s: torch.Tensor, x: torch.Tensor, index: Any) -> torch.Tensor:
    """The vjp of `x[index]`: zeros with the indexed part set to `s` (advanced indexing: torch.func)."""
    if not _basic(index):
        return prims.generic_vjp(operator.getitem, (0,), s, x, index)[0]
    out = torch.zeros_like(x, memory_format=torch.contiguous_format)
    out[index] = s.to(x.dtype)
    return out


def part_vjp(
    s: torch.Tensor, x: torch.Tensor, name: str, method: bool, pick: Any, args: tuple, kwargs: dict
) -> torch.Tensor:
    """The vjp of one output of `narrow` / `chunk` / `split` / `unbind` (`name`, called as a method or a torch
    function with `args` and `kwargs` after the input): zeros with that part set to `s`."""
    out = torch.zeros_like(x, memory_format=torch.contiguous_format)
    part = getattr(out, name)(*args, **kwargs) if method else _PART_FUNCTION_BY_NAME[name](out, *args, **kwargs)
    if pick is not None:
        part = part[pick]
    part.copy_(s.to(x.dtype))
    return out


def _ints(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _rank(n: fx.Node) -> int | None:
    meta = n.meta.get("tensor_meta")
    return len(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _dims(args: tuple, kwargs: dict, key: str) -> Any:
    """A permute's dims, given as varargs, one sequence or `dims=`."""
    if key in kwargs:
        return kwargs[key]
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return args[0]
    return args


def _inverse(dims: Any, rank: int | None) -> tuple[int, ...] | None:
    """The inverse of a permutation of `rank` dims (negative dims allowed), or None when it is not one."""
    if rank is None or not isinstance(dims, (tuple, list)) or len(dims) != rank or not all(_ints(d) for d in dims):
        return None
    norm = [d + rank if d < 0 else d for d in dims]
    if sorted(norm) != list(range(rank)):
        return None
    inverse = [0] * rank
    for k, d in enumerate(norm):
        inverse[d] = k
    return tuple(inverse)


def _form(node: fx.Node) -> tuple[str | None, bool]:
    """(method-or-function name, is a method) of a call, for the call forms handled here."""
    if node.op == "call_method":
        return str(node.target), True
    if node.op == "call_function":
        if node.target is operator.getitem:
            return "__getitem__", True
        if node.target in _RESHAPE_FUNCTIONS:
            return "reshape", False
        for name in ("permute", "transpose", "swapaxes", "movedim"):
            if node.target is getattr(torch, name):
                return name, False
        return _PART_FUNCTIONS.get(node.target), False
    return None, False


@register(Kind.RESHAPE)
class Reshape(Generic):
    """Routing ops: direct vjps for reshapes, permutes, transposes, expands and slices; else the generic vjp."""

    def vjp(self, lw: Lowerer, op: Op, s: Value, index: int, w: Value = None, b: Value = None) -> Value:
        direct = self.direct_vjp(lw, op, s, index)
        return direct if direct is not None else super().vjp(lw, op, s, index)

    def direct_vjp(self, lw: Lowerer, op: Op, s: Value, index: int) -> Value | None:
        """The direct vjp w.r.t. activation input `index`, or None for call forms left to the generic vjp."""
        node = op.node
        if len(op.inputs) == 2 and node.op == "call_method" and node.target in _LIKE_METHODS:
            # `x.expand_as(y)` with y an activation too: y only lends its shape, its vjp is zero
            if list(node.args) != list(op.inputs) or node.kwargs:
                return None
            if index == 1:
                return lw.em.call(torch.zeros_like, lw.input_value(op, 1))
        elif len(op.inputs) != 1:
            return None
        if node.op == "call_module":
            if op.pick is None and isinstance(module_of(lw, node), _RESHAPE_MODULES):
                return lw.em.call(reshape_vjp, s, lw.input_value(op, 0))
            return None
        if not node.args or node.args[0] is not op.inputs[0]:
            return None
        name, method = _form(node)
        x = lw.input_value(op, 0)
        # the call's other arguments (sizes from `x.shape`, an index) as their values in the explaining graph
        args = fx.node.map_arg(node.args[1:], lw.value)
        kwargs = fx.node.map_arg(node.kwargs, lw.value)
        em = lw.em
        if name in _PART_METHODS or name in _PART_FUNCTION_BY_NAME:
            return em.call(part_vjp, s, x, name, method, op.pick, tuple(args), dict(kwargs))
        if op.pick is not None:
            return None
        if name == "reshape" or (method and name in _RESHAPE_METHODS):
            if any(isinstance(a, torch.dtype) for a in (*args, *kwargs.values())):
                return None  # `x.view(dtype)` reinterprets the bits
            return em.call(reshape_vjp, s, x)
        if name == "__getitem__" and len(args) == 1 and not kwargs:
            return em.call(getitem_vjp, s, x, args[0])
        if name in ("expand", "expand_as"):
            return em.call(expand_vjp, s, x)
        if name == "permute":
            inverse = _inverse(_dims(tuple(args), kwargs, "dims"), _rank(op.inputs[0]))
            return None if inverse is None else em.call(permute_vjp, s, x, inverse)
        if name in ("transpose", "swapaxes"):
            pair = list(args) + [kwargs.get(k) for k in ("dim0", "dim1", "axis0", "axis1") if k in kwargs]
            if len(pair) == 2 and all(_ints(d) for d in pair):
                return em.call(transpose_vjp, s, x, pair[0], pair[1])
            return None
        if name == "movedim" and len(args) == 2 and not kwargs:
            return em.call(movedim_vjp, s, x, args[0], args[1])
        return None
