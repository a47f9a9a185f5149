"""Shape-specialised inlining of fx-wrapped functions: torchvision's Swin window attention traced as its parts.

torchvision wraps `shifted_window_attention` and `_patch_merging_pad` with ``torch.fx.wrap``, so the tracer
leaves each call as one opaque node (kind `other`: the gradient rule replays it, LRP rules have no rule for it).
Their bodies are shape-dependent Python (padding to whole windows, shift sizes that drop to 0 on small maps,
the shifted-window mask), so they cannot be traced symbolically. After tracing, `inline_wrapped_calls` traces
each such call's body again with the shapes of this call known, and puts the resulting ops in its place:

- every size the body reads is a Python int, except sizes that depend on the batch (found by running the graph
  at two batch sizes): those stay graph values (`x.size(0)`), so the explainer still takes any batch size;
- tensors the body builds from sizes alone (``x.new_zeros(...)`` and what is computed from it: the shifted-window
  mask) are computed now and become constant buffers of the traced module;
- parameters and parameter-derived arguments (the gathered relative position bias) stay graph inputs, so the
  ops that read them are parameter-only and the explainer's parameter cache keeps them current;
- a guard (`check_feature_shape`) checks at every call that each activation argument has the sizes the body was
  specialised to, and raises `ExplainError` otherwise (a feature map of another size would need other padding,
  shifts and masks).

The body is torchvision's own code, run once with the concrete shapes: the inlined ops are the torch calls the
wrapped call makes (F.pad, torch.roll, views, F.linear, matmul, softmax, the bias and mask additions; Swin V2's
F.normalize of q and k and its logit scale), so the graph computes the same values; the catalog knows each of
them. One in-place write is rewritten as a functional op (`written`): ``t[index].zero_()`` / ``fill_(v)`` into a
fresh ``clone()`` of a parameter-derived tensor that nothing else has read (Swin V2 zeroes the key part of its qkv
bias that way). What the pass cannot rebuild exactly it leaves whole (the node stays opaque: the gradient rule
replays it, LRP rules fail closed naming it): any other in-place write into a traced tensor, a branch on a traced
value, or a batch-dependent size read in Python (a constant of that size, `numel()`). Models passed as an
``fx.GraphModule`` are never rewritten.
"""

from __future__ import annotations

import operator
import traceback
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.fx as fx
from torch.fx.node import has_side_effect, map_aggregate, map_arg

from ..errors import ExplainError

#: Tensor methods that build a new tensor from sizes alone (computed now, as constants).
_CONSTRUCTORS = frozenset({"new_zeros", "new_ones", "new_full", "new_empty", "new_tensor"})
#: In-place writes rewritten as `written` when they go into a fresh copy of a parameter-derived tensor.
_WRITES = frozenset({"zero_", "fill_"})


def written(t: torch.Tensor, index: Any, method: str, args: tuple) -> torch.Tensor:
    """A copy of `t` with ``copy[index].<method>(*args)`` applied (the functional form of an in-place write)."""
    out = t.clone()
    getattr(out[index], method)(*args)
    return out


class NotInlinable(Exception):
    """The body of a wrapped call cannot be rebuilt exactly as graph ops (the call stays whole)."""


def wrapped_targets() -> dict[Callable[..., Any], str]:
    """The fx-wrapped functions this pass inlines, with a short description of each."""
    try:
        from torchvision.models import swin_transformer as sw
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return {}
    return {
        sw.shifted_window_attention: "Swin window attention",
        sw._patch_merging_pad: "Swin patch merging",
    }


@has_side_effect
def check_feature_shape(x: torch.Tensor, expected: tuple[int | None, ...], where: str) -> None:
    """Raises ExplainError unless `x` has the sizes `expected` (None: any size) that `where` was specialised to."""
    if x.dim() != len(expected) or any(e is not None and s != e for s, e in zip(x.shape, expected)):
        shown = tuple("B" if e is None else e for e in expected)
        raise ExplainError(
            f"{where} was specialised at compile time to inputs of shape {shown} (from example_input), but this "
            f"input gives {tuple(x.shape)} there: compile again with an example_input of this size"
        )


def inline_wrapped_calls(gm: fx.GraphModule, example_input: torch.Tensor) -> list[str]:
    """Replaces each input-dependent call of a `wrapped_targets` function in `gm` by its specialised body.

    Returns the names of the calls left whole, each with the reason (empty when all were inlined).
    """
    targets = wrapped_targets()
    graph = gm.graph
    inp = next(n for n in graph.nodes if n.op == "placeholder")
    live = {inp}
    for n in graph.nodes:
        if any(a in live for a in n.all_input_nodes):
            live.add(n)
    calls = [n for n in graph.nodes if n.op == "call_function" and n.target in targets and n in live]
    if not calls:
        return []
    needed = {a for n in calls for a in n.all_input_nodes} | set(calls)
    batch = example_input.shape[0]
    try:
        first = _values_at(gm, example_input, needed, batch)
        second = _values_at(gm, example_input, needed, batch + 1)
    except Exception:  # the model does not run on example_input: shape propagation reports it
        return [f"{n.name}: the model does not run on example_input" for n in calls]
    kept: list[str] = []
    for k, node in enumerate(calls):
        try:
            body = _specialise(gm, node, first, second, live, example_input.device, prefix=f"_inlined{k}")
        except NotInlinable as e:
            kept.append(f"{node.name}: {e}")
            continue
        result = _inline(gm, node, body, where=targets[node.target])
        # a later wrapped call may read this one's output directly
        first[result], second[result] = first.pop(node), second.pop(node)
        live.add(result)
    graph.lint()
    gm.recompile()
    return kept


# ----------------------------------------------------------------------------------------------- two batch sizes
class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, keep: set[fx.Node]) -> None:
        super().__init__(gm)
        self.keep = keep
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n in self.keep:
            self.values[n] = out
        return out


def _values_at(gm: fx.GraphModule, x: torch.Tensor, keep: set[fx.Node], batch: int) -> dict[fx.Node, Any]:
    """The values of the nodes `keep` for an input like `x` with `batch` samples: meta tensors (a real run
    when some op has no meta kernel)."""
    state = {
        k: torch.empty_like(v, device="meta")
        for k, v in list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False))
    }
    shape = (batch, *x.shape[1:])
    rec = _Recorder(gm, keep)
    try:
        with torch.nn.utils.stateless._reparametrize_module(gm, state), torch.no_grad():
            rec.run(torch.empty(shape, dtype=x.dtype, device="meta"))
        return rec.values
    except Exception:
        pass
    real = x.detach()[torch.arange(batch) % x.shape[0]]
    rec = _Recorder(gm, keep)
    with torch.no_grad():
        rec.run(real)
    return {n: _to_meta(v) for n, v in rec.values.items()}


def _to_meta(v: Any) -> Any:
    return map_aggregate(v, lambda a: a.to("meta") if isinstance(a, torch.Tensor) else a)


# ------------------------------------------------------------------------------------------- specialised trace
class _SizedProxy(fx.Proxy):
    """A proxy that knows its value at the two batch sizes (meta tensors or ints): sizes equal at both are
    Python ints, sizes that differ are graph values."""

    vals: tuple[Any, Any]
    tracer: _SpecialisingTracer

    def _size(self, d: int) -> Any:
        a, b = self.vals[0].size(d), self.vals[1].size(d)
        if a == b:
            return a
        return self.tracer.create_proxy("call_method", "size", (self, d), {})

    def size(self, dim: int | None = None) -> Any:
        if dim is not None:
            return self._size(dim)
        return tuple(self._size(d) for d in range(self.vals[0].dim()))

    @property
    def shape(self) -> Any:
        return self.size()

    def dim(self) -> int:
        return int(self.vals[0].dim())

    @property
    def ndim(self) -> int:
        return self.dim()

    def numel(self) -> Any:
        a, b = self.vals[0].numel(), self.vals[1].numel()
        if a == b:
            return a
        raise NotInlinable("the body reads a batch-dependent numel() in Python")

    @property
    def dtype(self) -> torch.dtype:
        return self.vals[0].dtype

    @property
    def device(self) -> torch.device:
        return self.tracer.device

    def __getattr__(self, k: str) -> Any:
        if k in _CONSTRUCTORS:
            return lambda *args, **kwargs: self.tracer.constant_from(self, k, args, kwargs)
        if k in _WRITES:
            return lambda *args: self.tracer.write_into_copy(self, k, args)
        if k.endswith("_") and not k.startswith("_"):
            raise NotInlinable(f"the body writes into a traced tensor in place (Tensor.{k})")
        return super().__getattr__(k)

    def __setitem__(self, key: Any, value: Any) -> None:
        raise NotInlinable("the body writes into a traced tensor in place (item assignment)")


def _augmented_assignment(name: str) -> Callable[..., Any]:
    def refuse(self: _SizedProxy, other: Any) -> Any:
        raise NotInlinable(f"the body updates a traced tensor in place (__{name}__)")

    return refuse


# `t += u` writes into `t` (and every view of it) in eager mode; a proxy would silently rebind the name instead
for _name in ("iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "imatmul", "iand", "ior", "ixor"):
    setattr(_SizedProxy, f"__{_name}__", _augmented_assignment(_name))


class _SpecialisingTracer(fx.Tracer):
    """Traces a function body given the values of its tensor arguments at two batch sizes."""

    def __init__(self, root: fx.GraphModule, body: Callable[..., Any], device: torch.device, prefix: str) -> None:
        super().__init__()
        self.root = root
        self.body = body
        self.graph = fx.Graph()
        self.tensor_attrs: dict[Any, str] = {}
        self.device = device
        self.prefix = prefix
        self.record_stack_traces = True
        self._constants = 0
        self.proxies: dict[fx.Node, _SizedProxy] = {}
        self.live: set[fx.Node] = set()  # nodes computed from an activation argument

    def proxy(self, node: fx.Node) -> fx.Proxy:
        proxy = _SizedProxy(node, self)
        self.proxies[node] = proxy
        if node.op == "placeholder" or any(a in self.live for a in node.all_input_nodes):
            self.live.add(node)  # placeholders: until `placeholder` says otherwise
        return proxy

    def write_into_copy(self, view: _SizedProxy, method: str, args: tuple) -> None:
        """``t[index].zero_()`` (or ``fill_(v)``) where `t` is a fresh ``clone()`` of a parameter-derived tensor
        that nothing else has read (Swin V2's qkv bias): written as one functional op, `written`, whose result
        the name `t` stands for from now on."""
        node = view.node
        base = node.args[0] if node.op == "call_function" and node.target is operator.getitem else None
        if (
            not isinstance(base, fx.Node)
            or base in self.live
            or not (base.op == "call_method" and base.target == "clone")
            or set(base.users) != {node}
            or node.users
            or any(isinstance(a, fx.Proxy) for a in args)
        ):
            raise NotInlinable(f"the body writes into a traced tensor in place (Tensor.{method})")
        owner = self.proxies[base]
        index = node.args[1]
        self.graph.erase_node(node)
        new = cast(_SizedProxy, self.create_proxy("call_function", written, (owner, index, method, args), {}))
        owner.node, owner.vals = new.node, new.vals
        self.proxies[new.node] = owner

    def _filter_traceback_frames(self, summary: traceback.StackSummary) -> traceback.StackSummary:
        """The frames from the traced body inwards (its lines locate the inlined ops in errors)."""
        code = getattr(self.body, "__code__", None)
        for i, frame in enumerate(summary):
            if code is not None and frame.filename == code.co_filename and frame.name == code.co_name:
                inner = [f for f in list(summary)[i:] if f.filename != __file__]
                return traceback.StackSummary.from_list(inner)
        return traceback.StackSummary.from_list([])

    def create_proxy(self, kind: str, target: Any, args: tuple, kwargs: dict, *rest: Any, **more: Any) -> fx.Proxy:
        if kind == "call_function" and target is operator.setitem:
            raise NotInlinable("the body writes into a traced tensor in place (item assignment)")
        if kind == "call_method" and str(target).endswith("_") and not str(target).startswith("_"):
            raise NotInlinable(f"the body writes into a traced tensor in place (Tensor.{target})")
        vals = None
        if kind in ("call_function", "call_method"):
            vals = tuple(_evaluate(kind, target, args, kwargs, i) for i in (0, 1))
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **more)
        if vals is not None:
            proxy.vals = vals  # type: ignore[attr-defined]
        return proxy

    def placeholder(self, name: str, vals: tuple[Any, Any], live: bool) -> _SizedProxy:
        proxy = self.create_proxy("placeholder", name, (), {})
        proxy.vals = vals  # type: ignore[attr-defined]
        if not live:
            self.live.discard(proxy.node)
        return proxy  # type: ignore[return-value]

    def constant_from(self, like: _SizedProxy, method: str, args: tuple, kwargs: dict) -> torch.Tensor:
        """`like.new_zeros(...)` and its siblings, computed now (sizes must be ints)."""
        found: list[Any] = []
        map_aggregate((args, kwargs), lambda a: found.append(a) if isinstance(a, fx.Proxy) else None)
        if found:
            raise NotInlinable(f"Tensor.{method} with a size that depends on the batch")
        template = torch.empty(0, dtype=like.dtype, device=self.device)
        return getattr(template, method)(*args, **kwargs)

    def create_arg(self, a: Any) -> Any:
        if isinstance(a, torch.Tensor) and not isinstance(a, torch.nn.Parameter):
            name = f"{self.prefix}_constant{self._constants}"
            while hasattr(self.root, name):  # a name of the user's model
                self._constants += 1
                name = f"{self.prefix}_constant{self._constants}"
            self._constants += 1
            self.root.register_buffer(name, a.detach().clone(), persistent=False)
            return self.create_node("get_attr", name, (), {})
        return super().create_arg(a)


def _evaluate(kind: str, target: Any, args: tuple, kwargs: dict, i: int) -> Any:
    """The call on the values at batch size number `i` (meta tensors; constants moved to meta)."""

    def value(a: Any) -> Any:
        if isinstance(a, _SizedProxy):
            return a.vals[i]
        if isinstance(a, torch.Tensor):
            return a.to("meta")
        return a

    a = map_aggregate(args, value)
    kw = map_aggregate(kwargs, value)
    try:
        with torch.no_grad():
            if kind == "call_method":
                return getattr(a[0], target)(*a[1:], **kw)
            return target(*a, **kw)
    except Exception as e:
        raise NotInlinable(f"{getattr(target, '__name__', target)} fails on meta tensors: {e}") from None


def _specialise(
    gm: fx.GraphModule,
    node: fx.Node,
    first: dict[fx.Node, Any],
    second: dict[fx.Node, Any],
    live: set[fx.Node],
    device: torch.device,
    prefix: str,
) -> fx.Graph:
    """The body of the wrapped call `node`, traced with its arguments' sizes known; placeholders in the order
    of `node.all_input_nodes`."""
    tracer = _SpecialisingTracer(gm, node.target, device, prefix)  # type: ignore[arg-type]
    proxies: dict[fx.Node, _SizedProxy] = {}
    for k, a in enumerate(node.all_input_nodes):
        vals = (first[a], second[a])
        if not all(isinstance(v, torch.Tensor) for v in vals):
            raise NotInlinable(f"argument {a.name} is not a tensor")
        proxies[a] = tracer.placeholder(f"arg{k}", vals, live=a in live)
    where = f"{node.target.__name__} ({_module_path(node) or node.name})"  # type: ignore[union-attr]
    for a, p in proxies.items():
        if a in live:
            sizes = [p.vals[0].size(d) for d in range(p.vals[0].dim())]
            expected = tuple(s if s == p.vals[1].size(d) else None for d, s in enumerate(sizes))
            tracer.create_proxy("call_function", check_feature_shape, (p, expected, where), {})
    swap = cast(Callable[[fx.Node], Any], proxies.__getitem__)  # nodes -> proxies (map_arg is typed for nodes)
    args = map_arg(node.args, swap)
    kwargs = map_arg(node.kwargs, swap)
    try:
        out = node.target(*args, **kwargs)  # type: ignore[operator]
    except NotInlinable:
        raise
    except Exception as e:  # fx's TraceError (a branch on a traced value) and anything else the body raises
        raise NotInlinable(f"{type(e).__name__}: {e}") from None
    if not isinstance(out, fx.Proxy):
        raise NotInlinable("the body does not return a traced tensor")
    tracer.graph.output(tracer.create_arg(out))
    return tracer.graph


def _module_path(node: fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1]
    return str(path[0] if isinstance(path, tuple) else path)


def _inline(gm: fx.GraphModule, node: fx.Node, body: fx.Graph, where: str) -> fx.Node:
    """Puts the nodes of `body` in place of `node` (placeholders: `node.all_input_nodes` in order); returns the
    node that now computes `node`'s value."""
    graph = gm.graph
    env: dict[fx.Node, fx.Node] = {}
    inputs = iter(node.all_input_nodes)
    result: Any = None
    with graph.inserting_before(node):
        for sn in body.nodes:
            if sn.op == "placeholder":
                env[sn] = next(inputs)
            elif sn.op == "output":
                result = map_arg(sn.args[0], lambda a: env[a])
            else:
                new = graph.create_node(
                    sn.op,
                    sn.target,
                    map_arg(sn.args, lambda a: env[a]),
                    map_arg(sn.kwargs, lambda a: env[a]),
                    name=f"{node.name}_{sn.name}",
                )
                inner = sn.stack_trace
                new.stack_trace = (
                    f"{node.stack_trace}\n{inner}" if inner and node.stack_trace else inner or node.stack_trace
                )
                if "nn_module_stack" in node.meta:
                    new.meta["nn_module_stack"] = dict(node.meta["nn_module_stack"])
                new.meta["inlined_from"] = (node.name, where)
                env[sn] = new
    if not isinstance(result, fx.Node):  # pragma: no cover - _specialise checks the body returns a tensor
        raise NotInlinable("the body does not return a traced tensor")
    node.replace_all_uses_with(result)
    graph.erase_node(node)
    return result
