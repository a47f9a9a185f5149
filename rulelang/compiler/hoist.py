"""Hoisting parameter-only computations (w.pos, folded BatchNorm, w * pattern, ...) out of the per-call graph.

`split_static` cuts an explaining GraphModule in two: `derive`, the nodes computed from parameters and
buffers alone, and `main`, which receives their results as extra inputs. `ParameterCache` reruns `derive`
only when a parameter's identity, storage, version counter, dtype, device or shape changes.

With a `sample` node (the zeros reference `x0` of `reference: zeros` rules, a function of the input's per-sample
shape, dtype and device only), the reference forward pass built on it is hoisted too: `derive` then also takes
the call's input `x` (first) and the cache is keyed additionally by `x.shape[1:]`, dtype and device.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx


def _static_nodes(graph: fx.Graph, sample: fx.Node | None = None) -> set[fx.Node]:
    static: set[fx.Node] = set()
    # module calls (the model's own `fc`, `avgpool`) count only in the reference pass: their weights are read
    # from the module when called, and the cache key then covers the module's parameters and buffers too
    ops = ("call_function", "call_method", "call_module") if sample is not None else ("call_function", "call_method")
    for n in graph.nodes:
        if n.op == "get_attr" or n is sample:
            static.add(n)
        elif n.op in ops and n.all_input_nodes and all(a in static for a in n.all_input_nodes):
            static.add(n)
    return static


def split_static(
    gm: fx.GraphModule, root: torch.nn.Module, sample: fx.Node | None = None
) -> tuple[fx.GraphModule | None, list[str], list[str]]:
    """Rewrites `gm` in place to take hoisted values as keyword inputs.

    Every parameter-only value the per-call graph reads becomes an input: the derived ones (w.pos, folded
    BatchNorm) and the raw attributes too, so that nothing in `gm` holds a tensor captured at build time.
    Returns the `derive` module (its inputs: the attributes at `targets`, read from `root` on every call), the
    input names, and the attribute targets (None, [], [] when the graph reads no attribute).

    `sample`: a node whose value depends on the input's per-sample shape, dtype and device only (the zeros
    reference); it and everything computed from it and the attributes alone (the reference forward pass, module
    calls included) move to `derive` too, whose first input is then the call's input `x`.
    """
    graph = gm.graph
    static = _static_nodes(graph, sample)
    frontier = [n for n in graph.nodes if n in static and any(u not in static for u in n.users)]
    if not frontier:
        return None, [], []
    derive = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    targets: list[str] = []
    if sample is not None:
        x = derive.placeholder("x")
        env[sample] = derive.node_copy(sample, lambda a: x)
    for n in graph.nodes:
        if n in static:
            if n is sample:
                continue
            if n.op == "get_attr":
                env[n] = derive.placeholder(f"attr_{len(targets)}")
                targets.append(str(n.target))
            else:
                env[n] = derive.node_copy(n, lambda a: env[a])
    derive.output(tuple(env[n] for n in frontier))

    last_input = [n for n in graph.nodes if n.op == "placeholder"][-1]
    for k, n in enumerate(reversed(frontier)):
        with graph.inserting_after(last_input):
            p = graph.placeholder(f"hoisted_{len(frontier) - 1 - k}", default_value=None)
        n.replace_all_uses_with(p)
    names = [f"hoisted_{k}" for k in range(len(frontier))]
    graph.eliminate_dead_code()
    gm.recompile()
    if sample is not None:
        derive_gm = fx.GraphModule(root, derive, class_name="DeriveReference")  # shares root's modules
    else:
        derive_gm = fx.GraphModule(torch.nn.Module(), derive, class_name="DeriveParameters")
    return derive_gm, names, targets


def _state(t: Any) -> Any:
    """What identifies a tensor's current contents (see `ParameterCache.values`)."""
    if isinstance(t, torch.Tensor):
        return (id(t), t.data_ptr(), t._version, t.dtype, t.device, t.shape)
    return id(t)


class ParameterCache:
    """Runs `derive` again only when an attribute it reads was replaced or changed storage, version, dtype,
    device or shape; the attributes are looked up on `root` at every call (never captured).

    With `sample=True` (a `derive` from `split_static(..., sample=)`), `values(x)` passes `x` to `derive` and the
    key also holds `x.shape[1:]`, `x.dtype`, `x.device` and the parameters and buffers of the modules `derive`
    calls."""

    def __init__(
        self,
        derive: fx.GraphModule,
        names: list[str],
        targets: list[str],
        root: torch.nn.Module,
        sample: bool = False,
    ) -> None:
        self.derive = derive
        self.names = names
        self.targets = targets
        self.root = root
        self.sample = sample
        self.modules = [str(n.target) for n in derive.graph.nodes if n.op == "call_module"] if sample else []
        self._key: Any = None
        self._values: tuple = ()
        self._inputs: list[Any] = []

    def fetch(self, target: str) -> Any:
        obj: Any = self.root
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def values(self, x: torch.Tensor | None = None) -> dict[str, Any]:
        tensors = [self.fetch(t) for t in self.targets]
        # identity (a parameter replaced by another), storage (`.data = ...`, `.to()`), version (in-place ops
        # through autograd-visible paths), dtype, device and shape; edits through `.data` keep all of these:
        # `Explainer.refresh()` drops the cache then
        key: Any = tuple(_state(t) for t in tensors)
        own: list[Any] = []
        if self.sample:
            assert x is not None
            for m in self.modules:
                module = self.fetch(m)
                own.extend(list(module.parameters()) + list(module.buffers()))
            key = (key, tuple(_state(t) for t in own), tuple(x.shape[1:]), x.dtype, x.device)
        if key != self._key:
            with torch.no_grad():
                self._values = self.derive(x, *tensors) if self.sample else self.derive(*tensors)
            self._key = key
            self._inputs = tensors + own
        return dict(zip(self.names, self._values))

    def tensors(self) -> list[torch.Tensor]:
        """The derived tensors held now, without the model's own (empty before the first call or after `clear`)."""
        own = {t.untyped_storage().data_ptr() for t in self._inputs if isinstance(t, torch.Tensor)}
        return [v for v in self._values if isinstance(v, torch.Tensor) and v.untyped_storage().data_ptr() not in own]

    def clear(self) -> None:
        self._key = None
        self._values = ()
        self._inputs = []
