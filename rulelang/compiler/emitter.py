"""Builds the explaining fx graph: one node per torch op, with common subexpressions shared.

Values are `fx.Node`s (tensors at run time) or Python numbers (constants folded at build time).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx

from ..lang.ast import Pos

Value = Any  # fx.Node | float | int | bool | None


class _No:
    """Marks 'no value' (distinct from None, which is a legal default)."""


_NO = _No()

_FOLD = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.pow,
    operator.neg,
    operator.gt,
    operator.ge,
    operator.lt,
    operator.le,
    operator.eq,
    operator.ne,
}


class Emitter:
    """Appends nodes to `graph`, tagging each with the rule position and model op it came from."""

    def __init__(self) -> None:
        self.graph = fx.Graph()
        self._memo: dict[Any, fx.Node] = {}
        self.pos: Pos | None = None  # position of the rule-file expression being lowered
        self.op_name: str | None = None  # model op being lowered
        self.nonneg: set[fx.Node] = set()  # sign facts: values known to be >= 0 (ReLU outputs, x.pos, ...)
        self.backward_after: fx.Node | None = None  # the last node before the relevance pass (`mark_backward`)

    def placeholder(self, name: str, default: Any = _NO) -> fx.Node:
        if default is _NO:
            return self.graph.placeholder(name)
        return self.graph.placeholder(name, default_value=default)

    def _tag(self, node: fx.Node) -> fx.Node:
        node.meta["rule_pos"] = self.pos
        node.meta["rule_op"] = self.op_name
        return node

    def _key(self, *parts: Any) -> Any:
        try:
            key = tuple(_freeze(p) for p in parts)
            hash(key)
            return key
        except TypeError:
            return None

    def _node(self, op: str, target: Any, args: tuple, kwargs: dict, name: str | None = None) -> fx.Node:
        """A new node, or the existing one computing the same op on the same arguments (CSE)."""
        key = self._key(op, target, args, kwargs)
        if key is not None and key in self._memo:
            return self._memo[key]
        node = self._tag(self.graph.create_node(op, target, tuple(args), dict(kwargs), name=name))
        if key is not None:
            self._memo[key] = node
        return node

    def call(self, fn: Callable[..., Any], *args: Value, **kwargs: Value) -> Value:
        """`fn(*args, **kwargs)` as a graph node; folded when every argument is a Python constant."""
        if fn in _FOLD and not kwargs and all(not isinstance(a, fx.Node) for a in args):
            return fn(*args)
        simplified = _simplify(fn, args)
        if simplified is not _NO:
            return simplified
        return self._node("call_function", fn, args, kwargs)

    def method(self, name: str, *args: Value, **kwargs: Value) -> fx.Node:
        return self._node("call_method", name, args, kwargs)

    def get_attr(self, qualname: str) -> fx.Node:
        return self._node("get_attr", qualname, (), {})

    def copy(self, node: fx.Node, arg_map: Callable[[fx.Node], Value], **changes: Any) -> fx.Node:
        """Replays an fx node of the traced model (target, args and kwargs mapped)."""
        new = self._node(
            changes.get("op", node.op),
            changes.get("target", node.target),
            fx.node.map_arg(node.args, arg_map),
            fx.node.map_arg(node.kwargs, arg_map),
            name=node.name,
        )
        new.meta.setdefault("source_node", node.name)
        return new

    def mark_backward(self) -> None:
        """Nodes emitted from now on belong to the relevance (backward) pass."""
        self.backward_after = next(iter(reversed(self.graph.nodes)), None)

    def output(self, value: Any) -> None:
        if REMATERIALIZE and self.backward_after is not None:
            rematerialize_relus(self.graph, self.backward_after)
        self.graph.output(value)


#: recompute `relu(a)` in the relevance pass where `a` is kept for it anyway (tests switch it off)
REMATERIALIZE = True


def rematerialize_relus(graph: fx.Graph, backward_after: fx.Node) -> int:
    """Recomputes ReLU outputs in the relevance pass from their inputs where those are kept for it anyway.

    A forward `n = relu(a)` whose value the relevance pass reads, while it also reads `a` at or after that point
    (α-β's derived `zn = z - zp`, ε's `stab(z)`, DeepLIFT's `x - x0` all keep the pre-activation), gets a copy
    `relu(a)` placed before its first relevance-pass use, which then reads the copy: the forward's ReLU output is
    freed after its last forward use, so one tensor per layer stays alive for the backward pass instead of two.
    Bit-identical (the same op on the same tensor); one cheap element-wise kernel per layer. Returns the count.
    """
    order = {n: k for k, n in enumerate(graph.nodes)}
    start = order[backward_after]
    count = 0
    for n in list(graph.nodes):
        if order[n] > start:
            break
        if n.op != "call_function" or n.target is not torch.relu or n.kwargs or len(n.args) != 1:
            continue
        a = n.args[0]
        if not isinstance(a, fx.Node):
            continue
        late = sorted((u for u in n.users if order[u] > start), key=order.__getitem__)
        if not late or not any(order[u] >= order[late[0]] for u in a.users):
            continue  # not read in the backward pass, or `a` is not alive there anyway
        with graph.inserting_before(late[0]):
            copy = graph.call_function(torch.relu, (a,))
        copy.meta.update({k: v for k, v in n.meta.items() if k in ("rule_pos", "rule_op", "source_node")})
        for u in late:
            u.replace_input_with(n, copy)
        count += 1
    return count


def _is_const(v: Any, c: float) -> bool:
    return not isinstance(v, fx.Node) and isinstance(v, (int, float)) and not isinstance(v, bool) and v == c


def _simplify(fn: Callable[..., Any], args: tuple) -> Any:
    """Algebraic identities that keep the generated code small: x+0, x-0, x*1, x/1, x*0, 0/x."""
    if len(args) != 2:
        return _NO
    a, b = args
    if fn is operator.add:
        if _is_const(b, 0):
            return a
        if _is_const(a, 0):
            return b
    if fn is operator.sub and _is_const(b, 0):
        return a
    if fn is operator.mul:
        if _is_const(b, 1):
            return a
        if _is_const(a, 1):
            return b
        if _is_const(a, 0) or _is_const(b, 0):
            return 0.0  # a term the sign facts proved zero: dropped (broadcasting restores shapes)
    if fn is operator.truediv and _is_const(a, 0):
        return 0.0
    if fn is operator.truediv and _is_const(b, 1):
        return a
    return _NO


def _freeze(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return (type(v).__name__,) + tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return ("dict",) + tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, slice):
        return ("slice", _freeze(v.start), _freeze(v.stop), _freeze(v.step))
    if isinstance(v, torch.Tensor):
        raise TypeError("tensors are not memo keys")
    if isinstance(v, float):
        return ("float", v)  # keep 1 and 1.0 apart (dtype promotion differs)
    return v
