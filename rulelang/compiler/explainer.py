"""`rulelang.compile(model, rules, example_input=x)` and the explaining model it returns."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ..errors import CompileError, RulelangError
from ..graph.canonicalize import build_opgraph
from ..graph.ir import OpGraph
from ..graph.trace import LeafSpec, eval_mode, trace
from ..lang import ast as A
from . import prims
from .checks import check_graph
from .hoist import ParameterCache, split_static
from .lower import Lowering
from .match import Plan, match
from .ops import inplace_free


@dataclass
class Explanation:
    """What `Explainer.explain` returns: the model output, the attribution at the input, and (with `keep`) the
    relevance at each node's output keyed by node name (a dict of streams for multi-stream rules)."""

    output: torch.Tensor
    attribution: torch.Tensor
    relevances: dict[str, Any] = field(default_factory=dict)


class Explainer(nn.Module):
    """An explaining model: the forward pass plus the rule's relevance pass, built as torch.fx GraphModules.

    It shares the model's modules and parameters (nothing is copied): changing the model's weights in place
    after compiling is reflected in the next explanation. Moving the explainer (`.to("cuda")`, `.double()`)
    moves those shared parameters, i.e. the model, too.
    """

    def __init__(
        self,
        graph: OpGraph,
        plan: Plan,
        rules: A.RuleFile,
        cache_parameters: bool = False,
        input_bounds: tuple[Any, Any] | None = None,
    ) -> None:
        super().__init__()
        #: (lo, hi) of the model input, scalars or per channel, when the caller declared them (static analysis)
        self.input_bounds = input_bounds
        self.cache_parameters = cache_parameters
        self.model = graph.gm
        self.rules = rules
        self.plan = plan
        self._graph = graph
        self.consts = nn.Module()
        self._const_names: dict[str, str] = {}
        for name, v in rules.params:
            if isinstance(v, (list, tuple)):
                self.consts.register_buffer(name, torch.tensor([float(t) for t in v]))
                self._const_names[name] = f"consts.{name}"
        self.inplace_free = nn.Module()
        self._module_targets: dict[str, str] = {}
        for n in graph.gm.graph.nodes:
            if n.op == "call_module":
                clone = inplace_free(graph.gm.get_submodule(n.target))
                if clone is not None:
                    attr = re.sub(r"\W", "_", str(n.target))
                    self.inplace_free.add_module(attr, clone)
                    self._module_targets[n.target] = f"inplace_free.{attr}"
        self.fitted = nn.Module()  # statistics from `fit:` (buffers named <fitname>__<node>)
        self._built: dict[tuple, fx.GraphModule] = {}
        self._caches: dict[tuple, ParameterCache] = {}

    # ------------------------------------------------------------------------------------------- building
    def _apply(self, fn, recurse=True):  # type: ignore[override]
        self.refresh()  # graphs hold references to tensors that .to()/.double() replace
        return super()._apply(fn, recurse)

    def refresh(self) -> None:
        """Forgets built graphs and cached derived parameters (needed only after replacing a module of the
        model, or, with cache_parameters=True, after editing weights in place through `.data`)."""
        self._built.clear()
        self._caches.clear()

    def _build(self, mode: str, at: str | None, keep: bool) -> fx.GraphModule:
        key = (mode, at, keep)
        if key in self._built:
            return self._built[key]
        rf, og = self.rules, self._graph
        if mode in ("explain", "propagate"):
            self._require_fitted()
        lw = Lowering(og, self.plan, rf, self._const_names, self._module_targets, self._fitted_names())
        em = lw.em
        x = em.placeholder("x")
        if mode in ("params", "acts"):
            return self._finish(key, lw, self._build_inspection(mode, lw, x, at))
        target = em.placeholder("target", None) if mode == "explain" else None
        injected = em.placeholder("relevance") if mode == "propagate" else None
        reference = em.placeholder("reference", None) if rf.reference else None
        lw.forward("main", x)
        if rf.reference:
            lw.forward("ref", em.call(prims.reference_input, x, reference, rf.reference))
        lw.forward_quantities()
        y = lw.value(og.output)
        if mode == "explain":
            init_scope = lw.io_scope(
                {"y": lambda: y, "target": lambda: em.call(prims.one_hot, y, target), "y0": lambda: lw._ref(og.output)},
                like=lambda: y,
                where="in `init:`",
            )
            seeds = {}
            for s, block in rf.init:
                v = init_scope.block(block)
                seeds[(s, og.output)] = v if isinstance(v, fx.Node) else em.call(torch.full_like, y, float(v))
        else:
            op = og.op(at)  # type: ignore[arg-type]
            seeds = {(s, op.out): injected for s in rf.streams}
        at_input, kept = lw.relevance(seeds, keep)
        final_scope = lw.io_scope(
            {"x": lambda: x, "x0": lambda: lw._ref(og.input), **{s: (lambda v=v: v) for s, v in at_input.items()}},
            like=lambda: x,
            where="in `final:`",
        )
        attribution = final_scope.block(rf.final)
        if not isinstance(attribution, fx.Node):
            attribution = em.call(torch.full_like, x, float(attribution))
        rel_out = {name: (r[rf.streams[0]] if len(rf.streams) == 1 else r) for name, r in kept.items()}
        em.output({"output": y, "attribution": attribution, "relevances": rel_out})
        return self._finish(key, lw, mode)

    def _finish(self, key: tuple, lw: Lowering, mode: str) -> fx.GraphModule:
        gm = fx.GraphModule(self, lw.em.graph, class_name=f"Explain_{mode}")
        gm.graph.eliminate_dead_code()
        gm.recompile()
        if self.cache_parameters and mode in ("explain", "propagate"):
            derive, names = split_static(gm, self)
            if derive is not None:
                self._caches[key] = ParameterCache(derive, names)
        self._built[key] = gm
        return gm

    def _hoisted(self, key: tuple) -> dict[str, Any]:
        cache = self._caches.get(key)
        return cache.values() if cache is not None else {}

    def _build_inspection(self, mode: str, lw: Lowering, x: fx.Node, names: Any) -> str:
        """Graphs for fitting: the (possibly folded) parameters, or each op's input and output activations."""
        ops = [self._graph.op(n) for n in names]
        if mode == "params":
            lw.envs["main"][self._graph.input] = x
            lw.em.output({op.name: {k: v for k, v in lw.params_of(op).items()} for op in ops})
        else:
            lw.forward("main", x)
            lw.em.output({op.name: (lw.value(op.inputs[0]), lw.value(op.out)) for op in ops})
        return mode

    # -------------------------------------------------------------------------------------------- fitting
    def fit_targets(self) -> list[tuple[A.Fit, Any]]:
        """(fit spec, op) pairs: every dense/conv op each `fit:` entry applies to."""
        from .match import selector_matches

        out = []
        for spec in self.rules.fit:
            for op in self._graph.ops:
                if op.kind in ("dense", "conv") and (
                    spec.match is None
                    and op.kind in ("dense", "conv")
                    or spec.match is not None
                    and selector_matches(spec.match, op)
                ):
                    out.append((spec, op))
        return out

    def _fitted_names(self) -> dict[tuple[str, str], str]:
        return {tuple(k.split("__", 1)): f"fitted.{k}" for k, _ in self.fitted.named_buffers()}  # type: ignore

    def _require_fitted(self) -> None:
        have = self._fitted_names()
        missing = [f"{spec.name} at {op.name}" for spec, op in self.fit_targets() if (spec.name, op.name) not in have]
        if missing:
            raise RulelangError(
                f"rule file {self.rules.name!r} needs statistics fitted from data "
                f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): run "
                "rulelang.fit(explainer, data) first, or compile with fitted=PATH"
            )

    def set_fitted(self, fitted: dict[tuple[str, str], torch.Tensor]) -> None:
        """Installs fitted statistics {(name, node): tensor} (shapes checked against the node's weight)."""
        targets = {(spec.name, op.name) for spec, op in self.fit_targets()}
        unknown = sorted(f"{a}/{b}" for a, b in set(fitted) - targets)
        if unknown:
            raise RulelangError(f"fitted statistics do not fit this model and rule file: unknown {unknown[:4]}")
        for (name, node), value in fitted.items():
            self.fitted.register_buffer(f"{name}__{node}", value.detach().clone())
        self.refresh()

    def save_fitted(self, path: str | Path) -> None:
        """Saves the fitted statistics (load them with `compile(..., fitted=path)` or `load_fitted`)."""
        from .fitting import save_fitted

        save_fitted(
            {tuple(k.split("__", 1)): v for k, v in self.fitted.named_buffers()},  # type: ignore[misc]
            self.rules.name,
            path,
        )

    def load_fitted(self, path: str | Path) -> None:
        from .fitting import load_fitted

        self.set_fitted(load_fitted(path))

    def _eager_params(self, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
        gm = self._build("params", tuple(names), False)
        with torch.no_grad():
            out = gm(torch.empty(0))
        return {
            n: {k: (v if isinstance(v, torch.Tensor) else torch.tensor(v)) for k, v in d.items()}
            for n, d in out.items()
        }

    def _activations(self, x: torch.Tensor, names: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        gm = self._build("acts", tuple(names), False)
        with torch.no_grad(), eval_mode(self.model):
            return gm(x)

    def _hyper(self, op: Any) -> dict[str, Any]:
        from .ops import Linear

        lw = Lowering(self._graph, self.plan, self.rules, self._const_names, self._module_targets, {})
        h = dict(Linear().hyper(lw, op))
        if op.kind == "conv":
            w = self.model.get_submodule(op.node.target).weight if op.node.op == "call_module" else None
            h["kernel"] = tuple(w.shape[2:]) if w is not None else None
        return h

    def _followed_by_relu(self) -> dict[str, bool]:
        users = self._graph.consumers()
        return {op.name: any(u.kind == "relu" for u in users.get(op.out, [])) for op in self._graph.ops}

    # -------------------------------------------------------------------------------------------- running
    def _run(self, gm: fx.GraphModule, *args: Any, key: tuple = ()) -> dict[str, Any]:
        with torch.no_grad(), eval_mode(self.model):
            try:
                return gm(*args, **self._hoisted(key))
            except RulelangError:
                raise
            except ValueError as e:  # bad target etc. from the primitives
                raise CompileError(f"cannot explain this input: {e}") from None

    def forward(self, x: torch.Tensor, target: Any = None, reference: torch.Tensor | None = None) -> torch.Tensor:
        """The attribution for `x` (same shape); target: int, tensor of ints per sample, or None (argmax)."""
        return self.explain(x, target, reference=reference).attribution

    def explain(
        self, x: torch.Tensor, target: Any = None, keep: str | None = None, reference: torch.Tensor | None = None
    ) -> Explanation:
        """Output, attribution and, with keep="all", the relevance at every node's output."""
        key = ("explain", None, keep == "all")
        gm = self._build(*key)
        args = (x, target) + ((reference,) if self.rules.reference else ())
        out = self._run(gm, *args, key=key)
        return Explanation(out["output"], out["attribution"], out["relevances"])

    def propagate(
        self,
        x: torch.Tensor,
        at: str,
        relevance: torch.Tensor,
        keep: str | None = None,
        reference: torch.Tensor | None = None,
    ) -> Explanation:
        """Injects `relevance` at the output of node `at` and propagates it down to the input."""
        try:
            self._graph.op(at)
        except KeyError as e:
            raise CompileError(str(e.args[0])) from None
        key = ("propagate", at, keep == "all")
        gm = self._build(*key)
        args = (x, relevance) + ((reference,) if self.rules.reference else ())
        out = self._run(gm, *args, key=key)
        return Explanation(out["output"], out["attribution"], out["relevances"])

    @property
    def code(self) -> str:
        """The generated Python of the explaining graph (and of its hoisted parameter computations)."""
        key = ("explain", None, False)
        code = self._build(*key).code
        if key in self._caches:
            code = "# computed once per parameter change:" + self._caches[key].derive.code + code
        return code

    @property
    def graph(self) -> OpGraph:
        """The model as ops (name, kind, inputs, output shape, first/last) in execution order; read-only."""
        return self._graph

    @property
    def nodes(self) -> list[str]:
        """Names of the model's ops, in execution order."""
        return [op.name for op in self._graph.ops]


def compile(
    model: nn.Module,
    rules: str | Path | A.RuleFile,
    example_input: torch.Tensor,
    *,
    leaf_modules: LeafSpec = (),
    fold_batchnorm: bool = True,
    check: bool = True,
    fitted: str | Path | dict | None = None,
    cache_parameters: bool = False,
    input_bounds: tuple[Any, Any] | None = None,
    **params: Any,
) -> Explainer:
    """Compiles `model` + a rule file (library name, path, or loaded RuleFile) into an `Explainer`.

    `params` override the rule file's parameters; `fitted` loads statistics saved by `save_fitted` (rules
    with `fit:`; otherwise run `rulelang.fit`). `cache_parameters=True` computes tensors derived from the
    weights alone (w.pos, folded BatchNorm, ...) once, and again only when a parameter's storage or version
    changes (in-place edits through `.data` are invisible to versions: call `explainer.refresh()` then).
    `input_bounds=(lo, hi)` (scalars or one value per channel) declares the range of the model input for the
    static analysis (`rulelang.analysis.static`). Fails closed when a node of the model matches no rule.
    """
    from ..lang.loader import load

    if isinstance(rules, A.RuleFile):
        rf = load(rules.path, **params) if params and rules.path else rules
    else:
        rf = load(rules, **params)
    gm = trace(model, example_input, leaf_modules)
    graph = build_opgraph(gm, fold_batchnorm=fold_batchnorm)
    plan = match(graph, rf)
    explainer = Explainer(graph, plan, rf, cache_parameters=cache_parameters, input_bounds=input_bounds)
    if fitted is not None:
        if isinstance(fitted, dict):
            explainer.set_fitted(fitted)
        else:
            explainer.load_fitted(fitted)
    if check and not (rf.fit and fitted is None):
        check_graph(explainer, example_input)
    return explainer
