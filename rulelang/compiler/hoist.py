"""Hoisting parameter-only computations (w.pos, folded BatchNorm, w * pattern, ...) out of the per-call graph.

`split_static` cuts an explaining GraphModule in two: `derive`, the nodes computed from parameters and
buffers alone, and `main`, which receives their results as extra inputs. `ParameterCache` reruns `derive`
only when a parameter's storage or version counter changes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx


def _static_nodes(graph: fx.Graph) -> set[fx.Node]:
    static: set[fx.Node] = set()
    for n in graph.nodes:
        if n.op == "get_attr":
            static.add(n)
        elif (
            n.op in ("call_function", "call_method")
            and n.all_input_nodes
            and all(a in static for a in n.all_input_nodes)
        ):
            static.add(n)
    return static


def split_static(gm: fx.GraphModule, root: torch.nn.Module) -> tuple[fx.GraphModule | None, list[str]]:
    """Rewrites `gm` in place to take hoisted values as keyword inputs; returns the `derive` module and the
    input names (None and [] when there is nothing to hoist)."""
    graph = gm.graph
    static = _static_nodes(graph)
    frontier = [n for n in graph.nodes if n in static and n.op != "get_attr" and any(u not in static for u in n.users)]
    if not frontier:
        return None, []
    derive = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in graph.nodes:
        if n in static:
            env[n] = derive.node_copy(n, lambda a: env[a])
    derive.output(tuple(env[n] for n in frontier))
    derive.eliminate_dead_code()

    last_input = [n for n in graph.nodes if n.op == "placeholder"][-1]
    names = []
    for k, n in enumerate(reversed(frontier)):
        with graph.inserting_after(last_input):
            p = graph.placeholder(f"hoisted_{len(frontier) - 1 - k}", default_value=None)
        n.replace_all_uses_with(p)
    names = [f"hoisted_{k}" for k in range(len(frontier))]
    graph.eliminate_dead_code()
    gm.recompile()
    derive_gm = fx.GraphModule(root, derive, class_name="DeriveParameters")
    return derive_gm, names


class ParameterCache:
    """Runs `derive` again only when a tensor it reads changed storage or version."""

    def __init__(self, derive: fx.GraphModule, names: list[str]) -> None:
        self.derive = derive
        self.names = names
        self._attrs = [n.target for n in derive.graph.nodes if n.op == "get_attr"]
        self._key: Any = None
        self._values: tuple = ()

    def _fetch(self, target: str) -> Any:
        obj: Any = self.derive
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def values(self) -> dict[str, Any]:
        tensors = [self._fetch(t) for t in self._attrs]
        key = tuple(
            (t.data_ptr(), t._version, t.dtype, t.device) if isinstance(t, torch.Tensor) else id(t) for t in tensors
        )
        if key != self._key:
            with torch.no_grad():
                self._values = self.derive()
            self._key = key
        return dict(zip(self.names, self._values))

    def clear(self) -> None:
        self._key = None
        self._values = ()
