"""Lowering: model ops + matched rules -> one explaining fx graph.

Graph layout: forward pass (and a reference pass when the rule file declares `reference:`), per-node forward
quantities, the seed (`init:`) at the output or the injected relevance (`propagate`), the relevance pass in
reverse topological order with relevance summed over consumers, and `final:` at the model input.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx

from ..errors import CompileError
from ..graph.catalog import INPLACE_FUNCTIONS, INPLACE_METHODS, output_nonneg
from ..graph.ir import Op, OpGraph
from ..lang import ast as A
from ..lang.builtins import NODE_FUNCTIONS
from ..lang.kinds import Kind
from . import prims
from .emitter import Emitter
from .evaluate import Scope, error_at
from .impls import impl_for, inplace_free
from .impls.reshape import join_part_vjps, joinable_parts
from .match import Plan

Value = Any

#: derive α-β's `zn = layer(x, w=w.neg, b=b.neg)` of a conv on non-negative inputs from the forward output (one
#: convolution less per layer);
#: tests switch it off to compare with the previous lowering
DERIVE_COMPLEMENT = True

#: sum the relevances of all parts of one split (`unbind`, `chunk`, `split`, or `getitem`s of each position of a
#: dim) as one stack/cat (`reshape.join_part_vjps`); tests switch it off to compare with the previous lowering
JOIN_PARTS = True

#: "dense, conv, affine" (error messages)
_PARAMETRIC = ", ".join(k for k in Kind if k.parametric)


class Lowering:
    """Builds one graph; `part` selects which forward pass (`main` or `ref`) `value()` reads."""

    def __init__(
        self,
        graph: OpGraph,
        plan: Plan,
        rf: A.RuleFile,
        consts: dict[str, str],
        module_targets: dict[str, str],
        fitted: dict[tuple[str, str], str] | None = None,
    ) -> None:
        self.og = graph
        self.gm = graph.gm
        self.plan = plan
        self.rf = rf
        self.em = Emitter()
        self.envs: dict[str, dict[fx.Node, Value]] = {"main": {}, "ref": {}}
        self.part = "main"
        self._params: dict[str, dict[str, Value]] = {}
        self._replays: dict[str, Any] = {}
        self.fwdq: dict[tuple[fx.Node, str, str], Value] = {}
        self.aux: dict[tuple[str, str], Value] = {}  # (part, op) -> extra forward results (max-pool switches)
        self.consts = consts  # param name -> root attribute holding its tensor
        self.module_targets = module_targets  # traced module path -> root attribute (in-place-free clones)
        self.params = dict(rf.params)
        self.defines = dict(rf.define)
        self.fitted = fitted or {}  # (fit name, op name) -> root attribute

    # --------------------------------------------------------------------------------- helpers for ops.py
    def value(self, n: fx.Node) -> Value:
        return self.envs[self.part][n]

    def input_value(self, op: Op, i: int) -> Value:
        return self.value(op.inputs[i])

    def module_target(self, node: fx.Node) -> str:
        return self.module_targets.get(str(node.target), f"model.{node.target}")

    def param(self, q: Any) -> Value:
        if isinstance(q, str):
            return self.em.get_attr(f"model.{q}")
        if isinstance(q, fx.Node):
            if q.op == "get_attr" and q not in self.envs[self.part]:
                return self.em.get_attr(f"model.{q.target}")  # a functional op's weight, outside a forward pass
            return self.value(q)
        return q

    def params_of(self, op: Op) -> dict[str, Value]:
        if op.name not in self._params:
            self._params[op.name] = impl_for(op).params(self, op)
        return self._params[op.name]

    def vjp_function(self, op: Op) -> tuple[prims.VjpOf, list[Value]]:
        """The op's generic vjp (a graph target) and the current values of its argument nodes."""
        order: list[fx.Node] = []
        fx.node.map_arg((op.node.args, op.node.kwargs), order.append)
        if op.name not in self._replays:
            live = set(op.inputs)
            positions = [k for k, n in enumerate(order) if n in live]
            self._replays[op.name] = prims.VjpOf(op.name, _eager_call(self, op), positions)
        return self._replays[op.name], [self.value(n) for n in order]

    # ------------------------------------------------------------------------------------------- passes
    def forward(self, part: str, x: Value) -> None:
        self.part = part
        env = self.envs[part]
        by_out = self.og.by_out
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                env[n] = x
            elif n.op == "output":
                continue
            elif n in by_out:
                op = by_out[n]
                self.em.op_name = op.name
                env[n] = impl_for(op).forward(self, op)
                # sign facts (the catalog's `output_sign`): `x.neg` of a ReLU output is 0, `x.pos` is x
                if isinstance(env[n], fx.Node) and output_nonneg(
                    op.kind, op.node, self.gm, all(env[i] in self.em.nonneg for i in op.inputs)
                ):
                    self.em.nonneg.add(env[n])
            elif n.op == "get_attr":
                env[n] = self.em.get_attr(f"model.{n.target}")
            else:
                target = self.module_target(n) if n.op == "call_module" else n.target
                env[n] = self.em.copy(n, lambda a: env[a], target=target)
        self.em.op_name = None
        self.part = "main"

    def forward_quantities(self) -> None:
        for op in self.og.ops:
            rule = self.plan.rule_for(op)
            for name, expr in rule.forward:
                scope = self.node_scope(op, rule, 0, relevance={})
                self.fwdq[(op.out, name, "main")] = scope.eval(expr)

    def relevance(
        self, seeds: dict[tuple[str, fx.Node], Value], keep: bool, stop_below: set[fx.Node] | None = None
    ) -> tuple[dict[str, Value], dict[str, dict[str, Value]]]:
        """Propagates stream relevances from `seeds` down to the input; returns it and the kept relevances."""
        self.em.mark_backward()
        contrib: dict[tuple[str, fx.Node], list[Value]] = {k: [v] for k, v in seeds.items()}
        kept: dict[str, dict[str, Value]] = {}
        streams = self.rf.streams
        for op in reversed(self.og.ops):
            if not any((s, op.out) in contrib for s in streams):
                continue
            rel = {s: self._sum(contrib.pop((s, op.out), []), op.out) for s in streams}
            if keep:
                kept[op.name] = rel
            rule = self.plan.rule_for(op)
            self.em.op_name = op.name
            for i, x in enumerate(op.inputs):
                for s, block in rule.relevance:
                    scope = self.node_scope(op, rule, i, relevance=rel)
                    r = scope.block(block)
                    if not isinstance(r, fx.Node):
                        if r == 0:
                            continue  # proved zero: this consumer sends x no relevance
                        r = self.em.call(torch.full_like, self.value(x), float(r))
                    # checks.py compares the result's shape with the input's, at this rule's line
                    r.meta.setdefault("rule_results", []).append((x, block.result.pos or block.pos, op.name, i))
                    contrib.setdefault((s, x), []).append(r)
        self.em.op_name = None
        at_input = {s: self._sum(contrib.get((s, self.og.input), []), self.og.input) for s in streams}
        return at_input, kept

    def _sum(self, values: list[Value], like: fx.Node) -> Value:
        if not values:
            return self.em.call(torch.zeros_like, self.value(like))
        if len(values) == 1:
            return values[0]
        joined = joinable_parts(values, _shape(like)) if JOIN_PARTS else None
        if joined is not None:
            # every part of one split (ViT's q, k, v): one stack/cat, not a zero-filled tensor per part, added up
            node = self.em.call(join_part_vjps, *joined)
            for v in values:
                node.meta.setdefault("rule_results", []).extend(v.meta.get("rule_results", ()))
            return node
        if len(values) == 2 or any(not isinstance(v, fx.Node) for v in values):
            total = values[0]
            for v in values[1:]:
                total = self.em.call(operator.add, total, v)
            return total
        # many consumers (DenseNet's concatenations): one fresh buffer accumulated in place, same order of adds
        return self.em.call(prims.sum_all, *values)

    # ------------------------------------------------------------------------------------------- scopes
    def param_thunks(self, like: Callable[[], Value]) -> dict[str, Callable[[], Value]]:
        out: dict[str, Callable[[], Value]] = {}
        for name, v in self.params.items():
            if isinstance(v, (list, tuple)):
                attr = self.consts[name]
                out[name] = functools.partial(self._channel_param, attr, like)
            else:
                out[name] = _constant(v)
        return out

    def _channel_param(self, attr: str, like: Callable[[], Value]) -> Value:
        return self.em.call(prims.channel_param, self.em.get_attr(attr), like())

    def reference_value(self, n: fx.Node, node: A.Expr | A.Pos | None = None) -> Value:
        """The value of `n` in the reference pass (`x0`, `y0`); `node` locates the error when there is none."""
        if not self.envs["ref"]:
            raise error_at(node, "`x0`/`y0` need a reference pass: add `reference: zeros` (or input) to the file")
        return self.envs["ref"][n]

    def node_scope(self, op: Op, rule: A.Rule, i: int, relevance: dict[str, Value]) -> Scope:
        """Names for a body at `op`; `i` is the input the body computes relevance for (multi-input ops)."""
        return NodeScope(self, op, i, relevance).scope()

    def forward_attr(self, op: Op, i: int, base: A.Expr, attr: str) -> Value:
        """`x.name` / `x[j].name`: a forward quantity of the op producing that input."""
        if isinstance(base, A.Name) and base.id == "x":
            src = op.inputs[i]
        elif (
            isinstance(base, A.Index)
            and isinstance(base.value, A.Name)
            and base.value.id == "x"
            and isinstance(base.index, A.Num)
        ):
            src = op.inputs[int(base.index.value)]
        else:
            raise error_at(base, f"`.{attr}` reads a forward quantity of a node input: write `x.{attr}`")
        key = (src, attr, "main")
        if key not in self.fwdq:
            raise error_at(
                base,
                f"the input of node {op.name} has no forward quantity `{attr}` (declare it under "
                "`forward:` in the rule that matches the producing node)",
            )
        return self.fwdq[key]

    def io_scope(self, names: dict[str, Callable[[], Value]], like: Callable[[], Value], where: str) -> Scope:
        return Scope(self.em, {**self.param_thunks(like), **names}, self.defines, where=where)


class NodeScope:
    """The names and node-bound functions (`layer`, `vjp`) a rule body sees at one op.

    `i` is the activation input the body computes relevance for (multi-input ops); `relevance` maps stream names
    to the relevance at the op's output (empty in `forward:`). Every name is computed lazily, on first use.
    """

    def __init__(self, lw: Lowering, op: Op, i: int, relevance: dict[str, Value]) -> None:
        self.lw = lw
        self.op = op
        self.i = i
        self.relevance = relevance
        self.impl = impl_for(op)
        self.xs = [lw.value(n) for n in op.inputs]
        self.where = f"for node {op.name} (kind {op.kind})"

    def scope(self) -> Scope:
        """The evaluation scope: x, y, i, w, b, x0, y0, parameters, relevance streams, fitted names."""
        lw, op, i, xs = self.lw, self.op, self.i, self.xs
        names: dict[str, Callable[[], Value]] = {
            "x": (lambda: xs[i]),
            "y": (lambda: lw.value(op.out)),
            "i": (lambda: i),
            "w": (lambda: self.weight("w")),
            "b": (lambda: self.weight("b")),
            "x0": (lambda: lw.reference_value(op.inputs[i], _current(lw.em))),
            "y0": (lambda: lw.reference_value(op.out, _current(lw.em))),
            **lw.param_thunks(lambda: xs[i]),
        }
        for s, v in self.relevance.items():
            names[s] = _constant(v)
        for spec in lw.rf.fit:
            names[spec.name] = functools.partial(self.fitted, spec.name)
        scope = Scope(
            lw.em,
            names,
            lw.defines,
            where=self.where,
            attr=lambda base, attr: lw.forward_attr(op, i, base, attr),
            inputs={
                "x": lambda j, e: xs[self.input_at(j, e)],
                "x0": lambda j, e: lw.reference_value(op.inputs[self.input_at(j, e)], e),
            },
        )
        scope.calls = {name: getattr(self, name) for name in NODE_FUNCTIONS}  # `layer`, `vjp`
        return scope

    # ------------------------------------------------------------------------------------------------ names
    def weight(self, name: str) -> Value:
        """`w` or `b` of a parametric op."""
        if not self.impl.parametric:
            raise error_at(
                _current(self.lw.em), f"`{name}` is not defined {self.where}: only {_PARAMETRIC} nodes have weights"
            )
        return self.lw.params_of(self.op)[name]

    def fitted(self, name: str) -> Value:
        """A fitted per-node quantity (`fit:`)."""
        attr = self.lw.fitted.get((name, self.op.name))
        if not attr:
            raise error_at(
                _current(self.lw.em), f"`{name}` was not fitted {self.where}: its `fit:` entry does not cover this node"
            )
        return self.lw.em.get_attr(attr)

    def input_at(self, j: Any, e: A.Expr) -> int:
        """`j` checked as an input index of the op (`x[j]`)."""
        if not isinstance(j, int) or not 0 <= j < len(self.xs):
            raise error_at(e, f"input index {j!r} out of range {self.where}: it has {len(self.xs)} input(s)")
        return j

    # ---------------------------------------------------------------------------------- node-bound builtins
    def substitutions(self, e: A.Call, sc: Scope) -> dict[str, Value]:
        """The weights a `layer(...)` / `vjp(...)` call substitutes (`w=`, `b=`)."""
        kw = {k: sc.eval(v) for k, v in e.kwargs}
        if kw and not self.impl.parametric:
            op = self.op
            raise error_at(
                e,
                f"`{e.func}(..., {', '.join(f'{k}=' for k in kw)})` substitutes weights, but "
                f"node {op.name} (kind {op.kind}) has none: only {_PARAMETRIC} nodes do",
            )
        return kw

    def layer(self, e: A.Call, sc: Scope) -> Value:
        """`layer(t, w=, b=)`: the op applied to `t` in place of input `i`."""
        lw, op, i, xs = self.lw, self.op, self.i, self.xs
        t = sc.eval(e.args[0])
        kw = self.substitutions(e, sc)
        b = kw.get("b")
        if not isinstance(t, fx.Node):
            if t == 0 and self.impl.parametric and b is not None and not isinstance(b, fx.Node) and b == 0:
                return 0.0  # a linear map of zero without bias
            t = lw.em.call(torch.full_like, xs[i], float(t))
        if t is xs[i] and kw.get("w") is None and b is None and op.pick is None:
            return lw.value(op.out)  # the op's own forward output: computed once, in the forward pass
        if t is xs[i] and DERIVE_COMPLEMENT:
            derived = self.complement(t, kw.get("w"), b)
            if derived is not None:
                return derived
        inputs = list(xs)
        inputs[i] = t
        return self.impl.layer(lw, op, inputs, kw.get("w"), kw.get("b"))

    def complement(self, t: Value, w: Value, c: Value) -> Value:
        """`layer(x, w=w.neg, b=c)` on a non-negative input `x`, as `z - layer(x, w=w.pos, b=b - c)`; else None.

        `z = layer(x)` is the op's forward output (computed anyway) and `w = w.pos + w.neg`, so one convolution
        replaces two: `c` is `b.neg` (complement bias `b.pos`), 0 (complement bias `b`) or the default `b`
        (complement bias 0). Equal up to rounding: the subtraction's error is ~eps * |zp| where the second
        convolution's is ~eps * |zn| (float32 attributions of ResNet50/VGG16 moved by <= 3e-7 (relative L2) against the
        two-convolution form, whose own error against float64 is 3e-7..2e-6). Only on inputs known >= 0 (α-β's
        `zn` after a ReLU; on a signed input the rules convolve `x.pos`, not `x`, so `z` does not apply anyway),
        and only for convolutions: on the trained digits-cnn, deriving the dense layers' `zn` too (the logit
        layer, where |zn| << |zp|) raised lrp-alpha2-beta1's float32 error against float64 from 3.7e-7 to 3.6e-6.
        """
        lw, op = self.lw, self.op
        if (
            op.kind != Kind.CONV
            or op.pick is not None
            or len(self.xs) != 1
            or t not in lw.em.nonneg
            or not _plain_padding(lw, op)
        ):
            return None
        p = lw.params_of(op)
        W, B = p["w"], p["b"]
        if not _is_clamp(w, W, "max"):
            return None
        if c is None:
            cb: Value = 0.0
        elif not isinstance(c, fx.Node) and c == 0:
            cb = B
        elif _is_clamp(c, B, "max"):
            cb = lw.em.call(torch.clamp, B, min=0)
        else:
            return None
        zp = self.impl.layer(lw, op, [t], lw.em.call(torch.clamp, W, min=0), cb)
        return lw.em.call(operator.sub, lw.value(op.out), zp)

    def vjp(self, e: A.Call, sc: Scope) -> Value:
        """`vjp(s, w=, b=)`: the vector-Jacobian product of the op with `s`, w.r.t. input `i`."""
        lw, op = self.lw, self.op
        s = sc.eval(e.args[0])
        kw = self.substitutions(e, sc)
        if not isinstance(s, fx.Node):
            if s == 0:
                return 0.0
            s = lw.em.call(torch.full_like, lw.value(op.out), float(s))
        return self.impl.vjp(lw, op, s, self.i, kw.get("w"), kw.get("b"))

    def vjp_frozen(self, e: A.Call, sc: Scope) -> Value:
        """`vjp_frozen(s)`: the vjp with the op's input statistics (a norm's scale) held constant."""
        lw, op = self.lw, self.op
        s = sc.eval(e.args[0])
        if not isinstance(s, fx.Node):
            if s == 0:
                return 0.0
            s = lw.em.call(torch.full_like, lw.value(op.out), float(s))
        try:
            return self.impl.vjp_frozen(lw, op, s, self.i)
        except CompileError as err:
            raise error_at(e, str(err)) from None

    def uniform(self, e: A.Call, sc: Scope) -> Value:
        """`uniform(t)`: `t` shared equally among the op's activation inputs (t / their number)."""
        t = sc.eval(e.args[0])
        n = len(self.op.inputs)
        return t if n == 1 else self.lw.em.call(operator.truediv, t, float(n))


def _is_clamp(v: Value, of: Value, bound: str) -> bool:
    """Whether `v` is the node `clamp(of, <bound>=0)` (`of.neg` for max, `of.pos` for min)."""
    return (
        isinstance(v, fx.Node)
        and isinstance(of, fx.Node)
        and v.target is torch.clamp
        and v.args == (of,)
        and v.kwargs == {bound: 0}
    )


def _plain_padding(lw: Lowering, op: Op) -> bool:
    """Whether the op's forward output is what `layer` computes (a conv module pads with zeros)."""
    node = op.node
    if node.op != "call_module":
        return True
    return getattr(lw.gm.get_submodule(str(node.target)), "padding_mode", "zeros") == "zeros"


def _shape(n: fx.Node) -> tuple[int, ...] | None:
    """The traced shape of `n`'s tensor, if recorded."""
    meta = n.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(shape) if shape is not None else None


def _constant(v: Value) -> Callable[[], Value]:
    """A thunk returning `v`."""
    return lambda: v


def _current(em: Emitter) -> A.Pos | None:
    """The position of the expression being lowered (for errors raised by lazily computed names)."""
    return em.pos


def _eager_call(lw: Lowering, op: Op) -> Callable[..., Any]:
    """The op's original call as an eager function of its argument nodes' values (in-place forms avoided)."""
    node, gm, pick = op.node, lw.gm, op.pick
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        fn: Callable[..., Any] = inplace_free(module) or module
    elif node.op == "call_function":
        fn = INPLACE_FUNCTIONS.get(node.target, node.target)
    else:
        method = str(INPLACE_METHODS.get(node.target, node.target))
        fn = lambda self_, *a, **k: getattr(self_, method)(*a, **k)

    def call(*values: Any) -> Any:
        it = iter(values)
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda _: next(it))
        out = fn(*args, **kwargs)
        return out[pick] if pick is not None else out

    return call
