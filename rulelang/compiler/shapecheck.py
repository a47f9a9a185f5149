"""The compile-time shape check: the explaining graph runs once on meta tensors (no data, no arithmetic), so that
a shape error in a rule body, or a body returning relevance of the wrong shape, is reported at that rule's line
before any real tensor is touched.

It uses only the explainer's public surface: `build`, `hoisted_graph`, `rules`.

Speed: a meta kernel is a pure function of its inputs' metadata (shape, strides, dtype) and of the call's other
arguments, and most of a check's time goes to torch's Python meta kernels of elementwise ops, called again and
again on the same shapes (a ResNet's blocks repeat). `MetaCache` therefore remembers, per (callable, metadata of
every argument), the metadata of a *successful* result and answers a repeat with a fresh meta tensor of that
metadata. Failures are never remembered (a repeat of a failing call runs, and fails, again), and every node's
result is still compared with the shape its rule must give: the check reports exactly what it reported before.
"""

from __future__ import annotations

import contextlib
import types
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
from torch.nn.utils import stateless

from ..errors import CompileError, NoMetaKernel, RulelangError
from . import prims
from .evaluate import error_at
from .keys import EXPLAIN

if TYPE_CHECKING:
    from .explainer import Explainer

#: a key part that makes a call uncacheable (an argument whose effect is not described by plain data)
_NO = object()

_ATOMS = (type(None), bool, int, float, complex, str, torch.dtype, torch.device, torch.memory_format, torch.layout)
#: where the callables live whose meta results are cached across checks (pure functions of their arguments)
_PURE_MODULES = frozenset({"operator", "_operator", "math", "builtins"})
#: rulelang's own leaf functions that explaining graphs call: module-level functions of prims and of the impls
_OWN_PREFIXES = (prims.__name__, prims.__name__.rsplit(".", 1)[0] + ".impls.")


def _arg_key(v: Any, plain: list[bool]) -> Any:
    """A hashable description of an argument: what a meta kernel's result may depend on. `plain[0]` is cleared
    when the description holds an object by identity (a callable, a module): valid within one run only."""
    t = type(v)
    if t is torch.Tensor or isinstance(v, torch.Tensor):
        if v.device.type != "meta" or t is not torch.Tensor and t is not torch.nn.Parameter:
            return _NO  # a real tensor's values may matter; subclasses may override anything
        return (v.dtype, v.shape, v.stride(), v.storage_offset(), v.layout)
    if t in _ATOMS:
        return (t, v)
    if isinstance(v, (tuple, list)):  # also fx's immutable_list, torch.Size
        parts = tuple(_arg_key(a, plain) for a in v)
        return _NO if any(p is _NO for p in parts) else (t, parts)
    if isinstance(v, dict):  # also fx's immutable_dict
        parts = tuple((k, _arg_key(a, plain)) for k, a in v.items())
        return _NO if any(p[1] is _NO for p in parts) else (dict, parts)
    if t is slice:
        parts = (_arg_key(v.start, plain), _arg_key(v.stop, plain), _arg_key(v.step, plain))
        return _NO if any(p is _NO for p in parts) else (slice, parts)
    if v is Ellipsis:
        return (t,)
    if callable(v) and not isinstance(v, torch.nn.Module):
        try:
            hash(v)
        except TypeError:
            return _NO
        plain[0] = False
        return (id(v),)
    return _NO


def _result_spec(v: Any) -> Any:
    """The metadata of a result, to rebuild it from (`_NO` for a result that is not plain data)."""
    t = type(v)
    if t is torch.Tensor:
        if v.device.type != "meta":
            return _NO
        return (torch.Tensor, v.dtype, tuple(v.shape), v.stride(), v.storage_offset())
    if t in _ATOMS or t is torch.Size:
        return (None, v)  # immutable
    if t is tuple or t is list:
        parts = tuple(_result_spec(a) for a in v)
        return _NO if any(p is _NO for p in parts) else (t, parts)
    return _NO


def _rebuild(spec: Any) -> Any:
    kind = spec[0]
    if kind is torch.Tensor:
        _, dtype, shape, stride, offset = spec
        if offset == 0:
            return torch.empty_strided(shape, stride, dtype=dtype, device="meta")
        extent = offset + sum((s - 1) * st for s, st in zip(shape, stride)) + 1 if all(shape) else offset
        return torch.empty(extent, dtype=dtype, device="meta").as_strided(shape, stride, offset)
    if kind is None:
        return spec[1]
    return kind(_rebuild(p) for p in spec[1])


def _mutates(target: Any, kwargs: dict[str, Any]) -> bool:
    """In-place calls (`x.unsqueeze_(0)`, `relu(x, inplace=True)`, `out=`) change a tensor's metadata or alias it:
    always run."""
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    return (name.endswith("_") and not name.endswith("__")) or "out" in kwargs or bool(kwargs.get("inplace"))


def _pure(target: Any) -> bool:
    """Callables whose meta result depends on their arguments only (torch's own functions, operators, rulelang's
    prims and impls' vjp functions)."""
    if isinstance(target, str):
        return True  # a Tensor method
    if not isinstance(target, (types.FunctionType, types.BuiltinFunctionType, torch._ops.OpOverload)):
        return False
    module = getattr(target, "__module__", None) or ""
    if module in _PURE_MODULES or module == "torch" or module.startswith("torch."):
        return True
    # module-level only (a closure's result may depend on what it captured)
    return module.startswith(_OWN_PREFIXES) and getattr(target, "__qualname__", None) == target.__name__


class MetaCache:
    """Remembers the result metadata of successful meta calls, keyed by the callable and its arguments'
    metadata; bounded (least recently used entries go first). One instance serves one check; the entries of
    plain calls to torch's and rulelang's own functions are also kept for later checks (`shared`)."""

    def __init__(self, shared: OrderedDict[Any, Any] | None = None, limit: int = 8192) -> None:
        self.local: dict[Any, Any] = {}
        self.shared = shared
        self.limit = limit
        self.hits = 0
        self.misses = 0

    def key(self, n: fx.Node, args: tuple, kwargs: dict[str, Any]) -> tuple[Any, bool] | None:
        """(key, shareable) for a call, None when it must run."""
        if n.op not in ("call_function", "call_method", "call_module"):
            return None
        if _mutates(n.target, kwargs):
            return None
        plain = [n.op != "call_module" and _pure(n.target)]
        a = _arg_key(args, plain)
        k = _arg_key(kwargs, plain) if kwargs else ()
        if a is _NO or k is _NO:
            return None
        target: Any = n.target
        if n.op == "call_module":  # the module object itself (alive while the graph is): this check only
            owner = n.graph.owning_module
            if owner is None:
                return None
            target = (target, id(owner.get_submodule(str(target))))
        return (n.op, target, a, k, torch.get_default_dtype()), plain[0]

    def get(self, key: Any) -> Any:
        spec = self.local.get(key, _NO)
        if spec is _NO and self.shared is not None:
            spec = self.shared.get(key, _NO)
            if spec is not _NO:
                with contextlib.suppress(KeyError):  # dropped meanwhile by another thread's check
                    self.shared.move_to_end(key)
        if spec is _NO:
            return _NO
        self.hits += 1
        return _rebuild(spec)

    def put(self, key: Any, shareable: bool, value: Any) -> None:
        self.misses += 1
        spec = _result_spec(value)
        if spec is _NO:
            return
        self.local[key] = spec
        if shareable and self.shared is not None:
            self.shared[key] = spec
            while len(self.shared) > self.limit:
                with contextlib.suppress(KeyError):
                    self.shared.popitem(last=False)


#: meta results of torch's and rulelang's own functions, shared by every check in this process
_SHARED: OrderedDict[Any, Any] = OrderedDict()


class ShapeChecker(fx.Interpreter):
    """Runs a graph on meta tensors; maps failures to the rule line that emitted the failing node, and compares
    every rule result (tagged `rule_results` by the lowering) with the shape of the node input it is for.

    `cache` answers repeated calls (same callable, same argument metadata) without running them again; None
    runs every node."""

    def __init__(self, gm: fx.GraphModule, cache: MetaCache | None = None) -> None:
        super().__init__(gm)
        self.extra_traceback = False  # our errors are one located line, without fx's "While executing ..."
        self.cache = cache

    def run_node(self, n: fx.Node) -> Any:
        cache = self.cache
        found = None
        if cache is not None and n.op in ("call_function", "call_method", "call_module"):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            found = cache.key(n, args, kwargs)
            value = cache.get(found[0]) if found is not None else _NO
            if value is _NO:
                value = self._run(n, lambda: getattr(self, n.op)(n.target, args, kwargs))
                if found is not None:
                    cache.put(found[0], found[1], value)
        else:
            value = self._run(n, lambda: fx.Interpreter.run_node(self, n))
        _check_results(n, value)
        return value

    def _run(self, n: fx.Node, call: Callable[[], Any]) -> Any:
        try:
            with self._set_current_node(n):
                return call()
        except RulelangError:
            raise
        except NotImplementedError:
            raise NoMetaKernel() from None
        except Exception as e:  # a shape or dtype error in a lowered body
            pos = n.meta.get("rule_pos")
            op = n.meta.get("rule_op")
            text = str(e).strip()
            msg = f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
            if pos is not None:
                raise error_at(pos, f"shape error at node {op}: {msg}") from None
            raise CompileError(f"the model cannot be run on the example input at node {n.name}: {msg}") from None


def _check_results(n: fx.Node, value: Any) -> None:
    """Compares a node's value with the shape of each node input it is the relevance for (`rule_results`)."""
    for x, pos, op, i in n.meta.get("rule_results", ()):
        expected = tuple(x.meta["tensor_meta"].shape)
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else None
        if got != expected and i < 0:  # `init:` (shaped like the output) or `final:` (like the input)
            what = "model output" if op == "init:" else "model input"
            raise error_at(pos, f"`{op}` gives a value of shape {got}, but the {what} has shape {expected}")
        if got != expected:
            which = f"input {i} ({x.name})" if i else f"its input ({x.name})"
            raise error_at(
                pos,
                f"the rule for node {op} returns relevance of shape {got} for {which}, which has shape "
                f"{expected}: a relevance body must return one value per entry of the node's input",
                hint="`vjp(s)` maps a value shaped like the node's output (R, y) back to its input's shape",
            )


def _meta_state(gm: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: torch.empty_like(v, device="meta")
        for k, v in list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False))
    }


def check_graph(explainer: Explainer, example_input: torch.Tensor, cache: bool = True) -> None:
    """Builds the explain graph and runs it on meta tensors (skipped where an op has no meta kernel).

    `cache=False` runs every node's meta kernel (see `MetaCache`; the result is the same)."""
    key = EXPLAIN
    gm = explainer.build(key)
    hoisted = explainer.hoisted_graph(key)
    memo = MetaCache(_SHARED) if cache else None
    x = torch.empty_like(example_input, device="meta")
    args: list[Any] = [x, None]
    if explainer.rules.reference:
        args.append(torch.empty_like(example_input, device="meta") if explainer.rules.reference == "input" else None)
    try:
        with torch.no_grad():
            if hoisted is not None:
                derive, _ = hoisted
                attrs = [
                    torch.empty_like(t, device="meta") if isinstance(t, torch.Tensor) else t
                    for t in explainer.hoisted_inputs(key)
                ]
                args.extend(ShapeChecker(derive, memo).run(*attrs))
            with stateless._reparametrize_module(gm, _meta_state(gm)):
                ShapeChecker(gm, memo).run(*args)
    except NoMetaKernel:
        return
