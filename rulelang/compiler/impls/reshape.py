"""Routing ops (views and copies of their input): direct vjps instead of a torch.func replay.

- view / reshape / flatten / unflatten / squeeze / unsqueeze / contiguous / view_as / reshape_as: reshape back;
- permute -> the inverse permutation; transpose / swapaxes -> the same transpose; movedim -> the opposite move;
- expand / expand_as -> summed back to the input's shape (aten's `sum_to`, what autograd runs);
- getitem with basic indexing (ints, slices, None, ...), narrow, chunk / split / unbind (one output each): a zero
  tensor with the slice that output came from set to `s`;
- every part of one split used (q, k, v of a packed qkv projection): `join_part_vjps`, their summed relevance as
  one `torch.stack` / `torch.cat` (the lowering's consumer sum, `lower.JOIN_PARTS`).

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


# ------------------------------------------------------------------------- every part of one split, joined
#: the calls returning a tuple of parts that tile their input
_SPLITS = ("chunk", "split", "unbind")


def _stack_dim(index: Any, rank: int) -> tuple[int, int] | None:
    """(dim, int) of a getitem index picking one position of one dim (`x[..., k, :]`, `x[:, k]`, `x[k]`)."""
    parts = index if isinstance(index, tuple) else (index,)
    ints = [j for j, p in enumerate(parts) if _ints(p)]
    ellipses = [j for j, p in enumerate(parts) if p is Ellipsis]
    rest = [p for p in parts if not _ints(p) and p is not Ellipsis]
    if len(ints) != 1 or len(ellipses) > 1 or any(p != slice(None) for p in rest) or len(parts) - len(ellipses) > rank:
        return None
    j = ints[0]
    dim = rank - (len(parts) - j) if ellipses and ellipses[0] < j else j
    return dim, parts[j]


def _split_dim(name: str, args: tuple, kwargs: dict) -> Any:
    """The dim of a `chunk` / `split` / `unbind` call (`args`, `kwargs`: after the input), or None."""
    k = 0 if name == "unbind" else 1
    dim = kwargs.get("dim", args[k] if len(args) > k else 0)
    return dim if _ints(dim) and set(kwargs) <= {"dim", "split_size", "split_size_or_sections", "chunks"} else None


def join_part_vjps(x: torch.Tensor, how: str, specs: tuple, *s: torch.Tensor) -> torch.Tensor:
    """The sum of the vjps of every part of one split of `x` (relevance summed over its consumers), in one kernel.

    `specs[k]` is the call of the `k`-th summand: `(index,)` of a `getitem_vjp` (`how` "getitem") or `(name,
    method, pick, args, kwargs)` of a `part_vjp` (`how` "part"); `s[k]` its relevance. When the parts tile `x`
    (at this call's shapes) the sum, `zeros` with each part filled in and added up, is `torch.stack` / `torch.cat`
    of the parts along the split dim, `+ 0.0`: bit for bit, since each element is one part's value plus zeros
    (`v + 0 + 0 == v + 0`, which turns -0.0 into 0.0 as the sum did). Otherwise the sum itself, in the same order.
    """
    joined = _joined(x, how, specs, s)
    if joined is not None:
        return joined.add_(0.0)
    if how == "getitem":
        terms = [getitem_vjp(t, x, *spec) for t, spec in zip(s, specs)]
    else:
        terms = [part_vjp(t, x, *spec) for t, spec in zip(s, specs)]
    return prims.sum_all(*terms)


def _joined(x: torch.Tensor, how: str, specs: tuple, s: tuple) -> torch.Tensor | None:
    """`torch.stack` / `torch.cat` of `s` ordered by part when the parts tile `x` exactly once; else None."""
    tiling = _tiling(x, how, specs)
    if tiling is None:
        return None
    dim, order, shapes, stack = tiling
    parts = [s[k].to(x.dtype) for k in order]
    if any(t.shape != shape for t, shape in zip(parts, shapes)):
        return None  # a broadcast fill: left to the sum
    return torch.stack(parts, dim) if stack else torch.cat(parts, dim)


def _tiling(x: torch.Tensor, how: str, specs: tuple) -> tuple[int, list[int], list[Any], bool] | None:
    """(dim, the summands in part order, the parts' shapes, stack or cat) when the parts of `specs` tile `x`."""
    if how == "getitem":
        found = [_stack_dim(spec[0], x.dim()) for spec in specs]
        dims = {f[0] for f in found if f is not None}
        if None in found or len(dims) != 1:
            return None
        dim = dims.pop()
        n = x.shape[dim]
        shapes = [x.select(dim, 0).shape] * n if n else []
        positions = [f[1] for f in found if f is not None]
        stack = True
    else:
        name, method, _, args, kwargs = specs[0]  # the same call for every part (`joinable_parts`)
        split_dim = _split_dim(name, args, kwargs)
        if split_dim is None:
            return None
        dim = split_dim
        views = getattr(x, name)(*args, **kwargs) if method else _PART_FUNCTION_BY_NAME[name](x, *args, **kwargs)
        n, shapes, stack = len(views), [v.shape for v in views], name == "unbind"
        positions = [spec[2] for spec in specs]
    if len(specs) != n or not all(_ints(p) and -n <= p < n for p in positions):
        return None
    order = sorted(range(n), key=lambda k: positions[k] % n)
    if [positions[k] % n for k in order] != list(range(n)):
        return None  # a part taken twice (then another is missing)
    return dim, order, shapes, stack


def joinable_parts(values: list[Any], shape: Any = None) -> tuple[Any, ...] | None:
    """The arguments of `join_part_vjps` for relevance contributions that are all part vjps of one input (the
    outputs of one `unbind` / `chunk` / `split`, or `getitem`s of one position each along one dim), else None.

    `shape`: the input's shape when traced, if known: parts that do not tile it (one unused, one taken twice) are
    left to the sum here already (`join_part_vjps` checks again at run time, where the batch size may differ).
    """
    if len(values) < 2 or not all(isinstance(v, fx.Node) and v.op == "call_function" for v in values):
        return None
    first = values[0]
    how = "getitem" if first.target is getitem_vjp else "part" if first.target is part_vjp else None
    if how is None:
        return None
    x, specs, s = first.args[1], [], []
    for v in values:
        if v.target is not first.target or len(v.args) < 3 or v.args[1] is not x or v.kwargs:
            return None
        if not isinstance(v.args[0], fx.Node):
            return None
        s.append(v.args[0])
        specs.append(tuple(v.args[2:]))
    if how == "getitem":
        if not all(len(spec) == 1 and _stack_dim(spec[0], 64) is not None for spec in specs):
            return None  # (64 only screens the index's form: the rank is checked at run time)
    elif not all(
        len(spec) == 5 and spec[0] in _SPLITS and _ints(spec[2]) and spec[:2] + spec[3:] == specs[0][:2] + specs[0][3:]
        for spec in specs
    ):
        return None  # not all picks of one and the same call
    nodes: list[fx.Node] = []
    fx.node.map_arg(tuple(specs), nodes.append)  # sizes read from a shape: known at run time only
    if shape is not None and not nodes and _tiling(torch.empty(shape, device="meta"), how, tuple(specs)) is None:
        return None
    return (x, how, tuple(specs), *s)
