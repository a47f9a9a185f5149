"""`rulelang.compile(model, rules, example_input=x)` and the explaining model it returns."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.fx as fx
from torch import nn
from torch.fx._lazy_graph_module import _LazyGraphModule

from ..errors import CompileError, ExplainError, NonFiniteError, NonFiniteWarning, RulelangError
from ..graph.ir import OpGraph
from ..graph.opgraph import build_opgraph
from ..graph.trace import LeafSpec, eval_mode, trace
from ..lang import ast as A
from . import prims
from .evaluate import error_at
from .guards import (
    Keep,
    ModelSnapshot,
    Target,
    check_example_input,
    check_input,
    check_no_hooks,
    check_reference,
    check_relevance,
    model_dtype,
    normalize_keep,
    normalize_target,
    unsupported_in_precision,
)
from .hoist import ParameterCache, split_static
from .impls import impl_for, inplace_free
from .keys import EXPLAIN, GraphKey
from .lower import Lowering
from .match import Plan, match, selector_matches
from .shapecheck import check_graph

OnNonfinite = Literal["raise", "warn", "ignore"]
_ON_NONFINITE = ("raise", "warn", "ignore")


@dataclass
class Explanation:
    """What `Explainer.explain` returns: the model output, the attribution at the input, and (with `keep`) the
    relevance at each kept node's output keyed by node name (a dict of streams for multi-stream rules)."""

    output: torch.Tensor
    attribution: torch.Tensor
    relevances: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """What `compile` traced, kept so that `refresh()` can trace again after the model's structure changed."""

    model: nn.Module
    example_input: torch.Tensor
    leaf_modules: tuple[Any, ...] = ()
    fold_batchnorm: bool = True
    check: bool = True


class Explainer(nn.Module):
    """An explaining model: the forward pass plus the rule's relevance pass, built as torch.fx GraphModules.

    It shares the model's modules and parameters (nothing is copied): changing the model's weights in place
    after compiling is reflected in the next explanation. Moving the explainer (`.to("cuda")`, `.double()`)
    moves those shared parameters, i.e. the model, too. Every call checks cheaply that the model has no forward
    hooks and the same submodules as when compiled (`refresh()` re-traces after a submodule was replaced).

    The public surface other parts of rulelang build on: `build(GraphKey)`, `hoisted_graph`, `activations`,
    `node_parameters`, `layer_function`, `shapes`, `graph`, `nodes`, `plan`, `rules`, `fit_targets`.
    """

    def __init__(
        self,
        graph: OpGraph,
        plan: Plan,
        rules: A.RuleFile,
        cache_parameters: bool = True,
        input_bounds: tuple[Any, Any] | None = None,
        on_nonfinite: OnNonfinite = "raise",
        source: Source | None = None,
    ) -> None:
        super().__init__()
        if on_nonfinite not in _ON_NONFINITE:
            raise ExplainError(f"on_nonfinite must be one of {', '.join(_ON_NONFINITE)}; got {on_nonfinite!r}")
        #: (lo, hi) of the model input, scalars or per channel, when the caller declared them (static analysis)
        self.input_bounds = input_bounds
        self.cache_parameters = cache_parameters
        #: what a call does when the attribution has NaN/inf entries: "raise" (NonFiniteError), "warn", "ignore"
        self.on_nonfinite: OnNonfinite = on_nonfinite
        self.rules = rules
        self.consts = nn.Module()
        self._const_names: dict[str, str] = {}
        for name, v in rules.params:
            if isinstance(v, (list, tuple)):
                self.consts.register_buffer(name, torch.tensor([float(t) for t in v]))
                self._const_names[name] = f"consts.{name}"
        self.fitted = nn.Module()  # statistics from `fit:` (buffers named <fitname>__<node>)
        self._source = source
        self._built: dict[GraphKey, fx.GraphModule] = {}
        self._caches: dict[GraphKey, ParameterCache] = {}
        #: torch.compile's options when `compile()` was called (None: the graphs run eagerly)
        self._compile_options: dict[str, Any] | None = None
        self._compiled: dict[GraphKey, Callable[..., Any]] = {}
        self._setup(graph, plan)

    def _setup(self, graph: OpGraph, plan: Plan) -> None:
        self.model = graph.gm
        self.plan = plan
        self._graph = graph
        self.inplace_free = nn.Module()
        self._module_targets: dict[str, str] = {}
        for n in graph.gm.graph.nodes:
            if n.op == "call_module":
                clone = inplace_free(graph.gm.get_submodule(n.target))
                if clone is not None:
                    attr = re.sub(r"\W", "_", str(n.target))
                    self.inplace_free.add_module(attr, clone)
                    self._module_targets[n.target] = f"inplace_free.{attr}"
        self._snapshot = ModelSnapshot(self._source.model if self._source is not None else graph.gm)
        out = graph.output.meta.get("tensor_meta")
        self._classes = int(out.shape[1]) if out is not None and len(out.shape) > 1 else 1
        inp = graph.input.meta.get("tensor_meta")
        self._example_shape = tuple(inp.shape) if inp is not None else None

    # ------------------------------------------------------------------------------------------- building
    def _apply(self, fn, recurse=True):
        self._forget()  # graphs hold references to tensors that .to()/.double() replace
        return super()._apply(fn, recurse)

    def _forget(self) -> None:
        self._built.clear()
        self._caches.clear()
        self._compiled.clear()

    def compile(self, enable: bool = True, **options: Any) -> Explainer:  # type: ignore[override]
        """Runs the explaining graphs through ``torch.compile`` from now on (in place; returns the explainer).

        What is compiled is the generated explain/propagate graph, once per graph (``explainer.build(key)``, with
        the hoisted weight-derived tensors as inputs), without graph breaks. The Python-side work stays eager
        around it, exactly as without compiling: argument checks (bad targets, inputs, references get the same
        `ExplainError`), the model-change check, and the parameter cache's validity check (a replaced or edited
        parameter is seen). ``torch.compile(explainer)`` instead would trace those checks too and break the graph
        at them; use this method (the ``nn.Module.compile()`` idiom).

        Args:
            enable: False goes back to eager graphs (and drops the compiled ones).
            **options: passed to ``torch.compile`` (``mode``, ``backend``, ``dynamic``, ``fullgraph``, ...).

        Returns:
            This explainer.

        Note: the first call per graph (and per new input shape) compiles (tens of seconds on a CPU); `refresh()`,
        `.to()` and `set_fitted` drop the compiled graphs with the built ones.
        """
        self._compiled.clear()
        self._compile_options = dict(options) if enable else None
        return self

    @property
    def compiled(self) -> bool:
        """Whether calls run the graphs through ``torch.compile`` (see `compile`)."""
        return self._compile_options is not None

    def refresh(self) -> None:
        """Forgets built graphs and cached derived parameters, and traces the model again when its structure
        changed since compiling (a submodule replaced, added or removed). Needed after replacing a module of the
        model, or, after editing weights in place through `.data` (invisible to the parameter
        cache's version check)."""
        self._forget()
        problem = self._snapshot.problem()
        if problem is None:
            return
        src = self._source
        if src is None:
            raise ExplainError(f"{problem}, and this explainer was not built by compile(): compile the model again")
        check_no_hooks(src.model)
        ref = next((p for p in src.model.parameters() if p.is_floating_point()), None)
        example = src.example_input if ref is None else src.example_input.to(ref.device, ref.dtype)
        graph = build_opgraph(trace(src.model, example, src.leaf_modules), fold_batchnorm=src.fold_batchnorm)
        plan = match(graph, self.rules)
        self._setup(graph, plan)
        targets = {(spec.name, op.name) for spec, op in self.fit_targets()}
        for key in [k for k, _ in self.fitted.named_buffers()]:
            if tuple(key.split("__", 1)) not in targets:
                delattr(self.fitted, key)
        if src.check:
            check_graph(self, example)

    def build(self, key: GraphKey) -> fx.GraphModule:
        """The graph for `key` (built once, then cached until `refresh()` or a move).

        Its inputs: explain `(x, target, [reference])`, propagate `(x, relevance, [reference])` (target a long
        tensor (batch,), an int or None; see `explain`), activations `(x,)`, params `()`, layer `(t, w)`; with
        `cache_parameters`, also the hoisted values as keywords (see `hoisted_graph`). Returns a dict: explain and
        propagate `{"output", "attribution", "relevances"}`, activations `{node: (input, output)}`, params
        `{node: {"w", "b"}}`; layer returns the tensor.
        """
        if key in self._built:
            return self._built[key]
        rf, og = self.rules, self._graph
        if key.mode in ("explain", "propagate"):
            self._require_fitted()
        lw = Lowering(og, self.plan, rf, self._const_names, self._module_targets, self._fitted_names())
        em = lw.em
        if key.mode in ("params", "activations", "layer"):
            return self._finish(key, lw, self._build_inspection(key, lw))
        x = em.placeholder("x")
        target = em.placeholder("target", None) if key.mode == "explain" else None
        injected = em.placeholder("relevance") if key.mode == "propagate" else None
        reference = em.placeholder("reference", None) if rf.reference else None
        lw.forward("main", x)
        sample = None
        if rf.reference:
            # the cached variant reads no caller reference: x0 is then zeros shaped like one sample of x
            x0 = em.call(prims.reference_input, x, None if key.cached_reference else reference, rf.reference)
            sample = x0 if key.cached_reference else None
            lw.forward("ref", x0)
        lw.forward_quantities()
        y = lw.value(og.output)
        if key.mode == "explain":
            init_scope = lw.io_scope(
                {
                    "y": lambda: y,
                    "target": lambda: em.call(prims.one_hot, y, target),
                    "y0": lambda: _reference_value(lw, og.output),
                },
                like=lambda: y,
                where="in `init:`",
            )
            seeds = {}
            for s, block in rf.init:
                v = init_scope.block(block)
                v = v if isinstance(v, fx.Node) else em.call(torch.full_like, y, float(v))
                v.meta.setdefault("rule_results", []).append((og.output, block.result.pos or block.pos, "init:", -1))
                seeds[(s, og.output)] = v
        else:
            op = og.op(key.at)  # type: ignore[arg-type]
            seeds = {(s, op.out): injected for s in rf.streams}
        at_input, kept = lw.relevance(seeds, key.keep is not False)
        final_names: dict[str, Callable[[], Any]] = {
            "x": lambda: x,
            "x0": lambda: _reference_value(lw, og.input),
        }
        for s, v in at_input.items():
            final_names[s] = _constant(v)
        final_scope = lw.io_scope(
            final_names,
            like=lambda: x,
            where="in `final:`",
        )
        attribution = final_scope.block(rf.final)
        if not isinstance(attribution, fx.Node):
            attribution = em.call(torch.full_like, x, float(attribution))
        where = rf.final.result.pos or rf.final.pos
        attribution.meta.setdefault("rule_results", []).append((og.input, where, "final:", -1))
        wanted = key.keep
        rel_out = {
            name: (r[rf.streams[0]] if len(rf.streams) == 1 else r)
            for name, r in kept.items()
            if wanted is True or (isinstance(wanted, frozenset) and name in wanted)
        }
        em.output({"output": y, "attribution": attribution, "relevances": rel_out})
        return self._finish(key, lw, key.mode, sample)

    def _finish(self, key: GraphKey, lw: Lowering, mode: str, sample: fx.Node | None = None) -> fx.GraphModule:
        # a lazy GraphModule: its code is generated once, below, after dead-code elimination and hoisting (a plain
        # one generates it on construction and again at each recompile(), three times per graph)
        gm = _LazyGraphModule(self, lw.em.graph, class_name=f"Explain_{mode}")
        gm.graph.eliminate_dead_code()
        gm.recompile()
        if mode in ("explain", "propagate"):
            self._check_precision(gm)
        if self.cache_parameters and mode in ("explain", "propagate"):
            derive, names, targets = split_static(gm, self, sample)
            if derive is not None:
                self._caches[key] = ParameterCache(derive, names, targets, self, sample=sample is not None)
        _LazyGraphModule.force_recompile(gm)
        self._built[key] = gm
        return gm

    def _check_precision(self, gm: fx.GraphModule) -> None:
        dtype = model_dtype(self.model)
        problem = unsupported_in_precision(gm, dtype) if dtype is not None else None
        if problem is not None:
            raise CompileError(
                f"rule file {self.rules.name!r} cannot run in {dtype}: {problem}. Explain in float32 "
                "(model.float() and x.float()) or float64"
            )

    def hoisted_graph(self, key: GraphKey) -> tuple[fx.GraphModule, list[str]] | None:
        """With `cache_parameters=True`: the graph computing the weight-only values hoisted out of `build(key)`
        (its inputs: `hoisted_inputs(key)`), and the keyword names `build(key)` receives them under; None when
        nothing is hoisted."""
        self.build(key)
        cache = self._caches.get(key)
        return (cache.derive, list(cache.names)) if cache is not None else None

    @property
    def cache_bytes(self) -> int:
        """Bytes held by the parameter cache now: derived weights (w.pos, folded BatchNorm, ...) and, for
        `reference: zeros` rules called without a reference, the reference pass's activations (x0, y0 at batch
        1, for the last input shape), kept between calls, counted once per storage (0 with
        `cache_parameters=False` or before the first call)."""
        seen: dict[tuple[Any, int], int] = {}
        for cache in self._caches.values():
            for t in cache.tensors():
                st = t.untyped_storage()
                seen[(t.device, st.data_ptr())] = st.nbytes()
        return sum(seen.values())

    def hoisted_inputs(self, key: GraphKey) -> list[Any]:
        """The attributes (parameters, buffers) `hoisted_graph(key)`'s graph takes, read from the model now."""
        self.build(key)
        cache = self._caches.get(key)
        return [cache.fetch(t) for t in cache.targets] if cache is not None else []

    def _hoisted(self, key: GraphKey, x: Any = None) -> dict[str, Any]:
        cache = self._caches.get(key)
        if cache is None:
            return {}
        return cache.values(x) if cache.sample else cache.values()

    def _uses_cached_reference(self, key: GraphKey, args: tuple) -> bool:
        """Whether a call runs the variant with the zeros reference pass cached: `reference: zeros`, no caller
        reference (args `(x, target|relevance, reference)`), the parameter cache on, an explain/propagate graph."""
        return (
            self.cache_parameters
            and self.rules.reference == "zeros"
            and key.mode in _COMPILABLE
            and len(args) == 3
            and args[2] is None
        )

    def _build_inspection(self, key: GraphKey, lw: Lowering) -> str:
        """Graphs for fitting and analysis: (folded) parameters, activations, or one node's `layer`."""
        ops = [self._graph.op(n) for n in key.nodes]
        em = lw.em
        if key.mode == "layer":
            t, w = em.placeholder("t"), em.placeholder("w")
            lw.forward("main", em.placeholder("x", None))  # weights read through the model's own nodes
            em.output(impl_for(ops[0]).layer(lw, ops[0], [t], w, 0.0))
        elif key.mode == "params":
            x = em.placeholder("x", None)
            lw.envs["main"][self._graph.input] = x
            em.output({op.name: dict(lw.params_of(op).items()) for op in ops})
        else:
            lw.forward("main", em.placeholder("x"))
            em.output({op.name: (lw.value(op.inputs[0]), lw.value(op.out)) for op in ops})
        return key.mode

    # ------------------------------------------------------------------------------- inspection (public)
    @property
    def num_classes(self) -> int:
        """The size of the model output's dim 1: what `target` indexes."""
        return self._classes

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each node's output shape for the example input (batch first), in execution order."""
        return {op.name: op.shape for op in self._graph.ops}

    def activations(self, x: torch.Tensor, names: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{node: (its first input, its output)} of the forward pass on `x` (model in eval mode, no grad)."""
        self._check_call(x)
        gm = self.build(GraphKey("activations", nodes=tuple(self._names(names))))
        with torch.no_grad(), eval_mode(self.model):
            return self._execute(gm, x)

    def node_parameters(self, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
        """{node: {"w": weight, "b": bias}} of dense/conv/affine nodes, a following BatchNorm folded in."""
        for n in names:
            op = self._graph.op(n)
            if not impl_for(op).parametric:
                raise ExplainError(f"node {op.name} (kind {op.kind}) has no weights")
        gm = self.build(GraphKey("params", nodes=tuple(self._names(names))))
        with torch.no_grad():
            out = self._execute(gm)
        return {
            n: {k: (v if isinstance(v, torch.Tensor) else torch.tensor(v)) for k, v in d.items()}
            for n, d in out.items()
        }

    def layer_function(self, name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Node `name`'s own op as a function `f(t, w)` of an input shaped like the node's and a weight shaped
        like its `w`, with bias 0: the rule language's `layer(t, w=w, b=0)` (differentiable, e.g. by torch.func)."""
        (node,) = self._names([name])
        op = self._graph.op(node)
        if not impl_for(op).parametric:
            raise ExplainError(f"node {op.name} (kind {op.kind}) has no weights")
        gm = self.build(GraphKey("layer", nodes=(node,)))
        return lambda t, w: gm.forward(t, w)

    def _names(self, names: list[str]) -> list[str]:
        out = []
        for n in names:
            try:
                out.append(self._graph.op(n).name)
            except KeyError as e:
                raise ExplainError(str(e.args[0])) from None
        return out

    # -------------------------------------------------------------------------------------------- fitting
    def fit_targets(self) -> list[tuple[A.Fit, Any]]:
        """(fit spec, op) pairs: every dense/conv op each `fit:` entry applies to."""
        out = []
        for spec in self.rules.fit:
            for op in self._graph.ops:
                if op.kind in ("dense", "conv") and (spec.match is None or selector_matches(spec.match, op)):
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
        self._forget()

    def save_fitted(self, path: str | Path) -> None:
        """Saves the fitted statistics (load them with `compile(..., fitted=path)` or `load_fitted`)."""
        from .fitstats import save_fitted

        save_fitted(
            {tuple(k.split("__", 1)): v for k, v in self.fitted.named_buffers()},  # type: ignore[misc]
            self.rules.name,
            path,
        )

    def load_fitted(self, path: str | Path) -> None:
        """Installs statistics saved by `save_fitted`."""
        from .fitstats import load_fitted

        self.set_fitted(load_fitted(path))

    # -------------------------------------------------------------------------------------------- running
    def _check_call(self, x: Any, reference: Any = None) -> None:
        problem = self._snapshot.problem()
        if problem is not None:
            raise ExplainError(
                f"the model changed after compiling: {problem}. Remove added hooks; after replacing a submodule "
                "call explainer.refresh() (it traces the model again) or compile again"
            )
        check_input(x, self._example_shape or tuple(x.shape), self.model)
        if reference is None and self.rules.reference == "input":
            raise ExplainError(
                f"rule file {self.rules.name!r} needs a reference input: call explainer(x, target, reference=x0)"
            )
        if reference is not None:
            if not self.rules.reference:
                raise ExplainError(f"rule file {self.rules.name!r} takes no reference input (no `reference:`)")
            check_reference(reference, x)

    def _execute(
        self,
        gm: fx.GraphModule,
        *args: Any,
        key: GraphKey | None = None,
        eager: bool = False,
    ) -> Any:
        """Runs a built graph (through torch.compile after `compile()`, for explain/propagate graphs unless
        `eager`); errors other than rulelang's become one ExplainError line (calling `forward` directly also keeps
        fx from printing its own traceback to stderr)."""
        try:
            kwargs = self._hoisted(key, args[0] if args else None) if key is not None else {}
        except RulelangError:
            raise
        except Exception as e:
            raise self._input_error(args, e) from None
        if key is not None and not eager and self._compile_options is not None and key.mode in _COMPILABLE:
            try:
                return self._compiled_graph(key, gm)(*args, **kwargs)
            except RulelangError:
                raise
            except Exception as e:
                # an error of the input itself is reported as such
                self._execute(gm, *args, key=key, eager=True)
                raise ExplainError(
                    f"torch.compile failed on this explainer's graph ({_first_line(e)}); the same call runs "
                    "without it: call explainer.compile(False), or pass other torch.compile options"
                ) from e
        try:
            return gm.forward(*args, **kwargs)
        except RulelangError:
            raise
        except Exception as e:
            raise self._input_error(args, e) from None

    def _input_error(self, args: tuple[Any, ...], e: Exception) -> ExplainError:
        """One line for an error a graph raised on this input: its shape, the example's, torch's first line."""
        shape = f" of shape {tuple(args[0].shape)}" if args and isinstance(args[0], torch.Tensor) else ""
        compiled = f" (compiled for {self._example_shape})" if self._example_shape else ""
        return ExplainError(f"cannot explain this input{shape}{compiled}: {_first_line(e)}")

    def _compiled_graph(self, key: GraphKey, gm: fx.GraphModule) -> Callable[..., Any]:
        fn = self._compiled.get(key)
        if fn is None:
            fn = torch.compile(dynamo_friendly(gm).forward, **(self._compile_options or {}))
            self._compiled[key] = fn
        return fn

    def _run(self, key: GraphKey, *args: Any, eager: bool = False) -> Explanation:
        if self._uses_cached_reference(key, args):
            key = replace(key, cached_reference=True)
        gm = self.build(key)
        if self._compile_options is not None and not eager and key.mode in _COMPILABLE:
            args = (args[0], target_tensor(args[1], args[0])) + args[2:] if key.mode == "explain" else args
        with torch.no_grad(), eval_mode(self.model):
            out = self._execute(gm, *args, key=key, eager=eager)
        return Explanation(out["output"], out["attribution"], out["relevances"])

    def forward(self, x: torch.Tensor, target: Target = None, reference: torch.Tensor | None = None) -> torch.Tensor:
        """The attribution of `x` for `target`: ``self.explain(x, target, reference=reference).attribution``.

        Args:
            x: a batch shaped like `example_input`.
            target: see :data:`rulelang.types.Target` (None: each sample's predicted class).
            reference: the reference input x0 for rule files with ``reference:`` (DeepLIFT).

        Returns:
            A tensor shaped like `x`.

        Raises:
            ExplainError, NonFiniteError: as :meth:`explain`.
        """
        return self.explain(x, target, reference=reference).attribution

    def explain(
        self,
        x: torch.Tensor,
        target: Target = None,
        keep: Keep = None,
        reference: torch.Tensor | None = None,
        *,
        on_nonfinite: OnNonfinite | None = None,
    ) -> Explanation:
        """Explains `x` for `target`.

        Args:
            x: a batch shaped like `example_input` (batch first), of the model's dtype and device.
            target: the class per sample along dim 1 of the output: an int (negative counts from the end), a
                sequence / integer tensor / array with one int per sample, or None for the predicted class
                (argmax of the output summed over dims after 1).
            keep: relevances to return at node outputs: None/False (none), True or "all", or a list of node names.
            reference: the reference input x0 for rule files with `reference:` (shaped like x or one sample).
            on_nonfinite: overrides the explainer's `on_nonfinite` for this call.

        Returns:
            `Explanation(output, attribution, relevances)`.

        Raises:
            ExplainError: a bad argument, or a model changed after compiling; NonFiniteError: NaN/inf in the
            attribution (naming the first node where they appear), unless on_nonfinite says otherwise.
        """
        self._check_call(x, reference)
        t = normalize_target(target, x.shape[0], self._classes)
        key = GraphKey("explain", keep=normalize_keep(keep, self._graph))
        args = (x, t) + ((reference,) if self.rules.reference else ())
        result = self._run(key, *args)
        self._check_finite(
            result, x, on_nonfinite, lambda: self._run(GraphKey("explain", keep=True), *args, eager=True)
        )
        return result

    def propagate(
        self,
        x: torch.Tensor,
        at: str,
        relevance: torch.Tensor,
        keep: Keep = None,
        reference: torch.Tensor | None = None,
        *,
        on_nonfinite: OnNonfinite | None = None,
    ) -> Explanation:
        """Injects `relevance` at the output of node `at` and propagates it down to the input: the relevance map
        below a layer, as the cosine-similarity-convergence (CSC) measurement of Sixt et al. 2020 §3.1 needs.

        Args:
            x: a batch shaped like `example_input` (the forward pass runs on it).
            at: a node name (see ``explainer.nodes``; op names, module paths or fx node names).
            relevance: the relevance at that node's output, shaped like its output for this batch.
            keep, reference, on_nonfinite: as in :meth:`explain`.

        Returns:
            ``Explanation(output, attribution, relevances)``.

        Raises:
            ExplainError: unknown node, or a relevance of the wrong type/shape; NonFiniteError as in :meth:`explain`.
        """
        if not isinstance(at, str):
            raise ExplainError(f"at must be a node name (see explainer.nodes), got {type(at).__name__}")
        (name,) = self._names([at])
        self._check_call(x, reference)
        check_relevance(relevance, self._graph.op(name), x.shape[0], like=x)
        key = GraphKey("propagate", at=name, keep=normalize_keep(keep, self._graph))
        args = (x, relevance) + ((reference,) if self.rules.reference else ())
        result = self._run(key, *args)
        rerun = lambda: self._run(GraphKey("propagate", at=name, keep=True), *args, eager=True)  # noqa: E731
        self._check_finite(result, x, on_nonfinite, rerun, injected=relevance)
        return result

    # ------------------------------------------------------------------------------------ non-finite values
    def _check_finite(
        self,
        result: Explanation,
        x: torch.Tensor,
        on_nonfinite: OnNonfinite | None,
        rerun: Callable[[], Explanation],
        injected: torch.Tensor | None = None,
    ) -> None:
        policy = self.on_nonfinite if on_nonfinite is None else on_nonfinite
        if policy not in _ON_NONFINITE:
            raise ExplainError(f"on_nonfinite must be one of {', '.join(_ON_NONFINITE)}; got {policy!r}")
        if policy == "ignore" or bool(torch.isfinite(result.attribution).all() & torch.isfinite(result.output).all()):
            return
        message = self._locate_nonfinite(result, x, rerun, injected)
        if policy == "raise":
            raise NonFiniteError(message)
        warnings.warn(message, NonFiniteWarning, stacklevel=3)

    def _locate_nonfinite(
        self, result: Explanation, x: torch.Tensor, rerun: Callable[[], Explanation], injected: Any
    ) -> str:
        """Names where NaN/inf first appear: the input, the forward pass, the seed or injected relevance, or the
        relevance pass (the rule of the first node whose relevance is non-finite). Runs the model again."""
        a, y = result.attribution, result.output
        bad = ~(torch.isfinite(a.flatten(1)).all(1) & torch.isfinite(y.flatten(1)).all(1))
        samples = bad.nonzero().flatten().tolist()
        which = "attribution" if not bool(torch.isfinite(a).all()) else "model output"
        what = "NaN" if bool(torch.isnan(a).any() | torch.isnan(y).any()) else "infinite values"
        head = f"the {which} has {what} in sample(s) {samples[:8]}{' ...' if len(samples) > 8 else ''}"
        bad_x = (~torch.isfinite(x.flatten(1))).any(1).nonzero().flatten().tolist()
        if bad_x:
            return f"{head}: the input x itself has NaN or infinite values in sample(s) {bad_x[:8]}"
        acts = self.activations(x, self.nodes)
        for op in self._graph.ops:
            if not bool(torch.isfinite(acts[op.name][1]).all()):
                return f"{head}: the forward pass first overflows at node {op.name} (kind {op.kind}, {op.target})"
        if injected is not None and not bool(torch.isfinite(injected).all()):
            return f"{head}: the injected relevance is not finite"
        kept = rerun().relevances
        consumers = self._graph.consumers()
        for op in reversed(self._graph.ops):
            r = kept.get(op.name)
            values = list(r.values()) if isinstance(r, dict) else [r]
            if any(isinstance(v, torch.Tensor) and not bool(torch.isfinite(v).all()) for v in values):
                users = consumers.get(op.out, [])
                if not users:
                    return f"{head}: the seed (`init:`) or injected relevance at node {op.name} is not finite"
                rules = "; ".join(f"node {u.name} ({_rule_where(self.plan.rule_for(u))})" for u in users)
                return f"{head}: the relevance first becomes non-finite at the output of node {op.name}, computed by the rule of {rules}"
        firsts = "; ".join(
            f"node {u.name} ({_rule_where(self.plan.rule_for(u))})" for u in consumers.get(self._graph.input, [])
        )
        return f"{head}: the relevance becomes non-finite at the model input, computed by the rule of {firsts} or by `final:`"

    # ---------------------------------------------------------------------------------------------- views
    @property
    def code(self) -> str:
        """The generated Python of the explaining graph (and of its hoisted parameter computations)."""
        code = self.build(EXPLAIN).code
        hoisted = self.hoisted_graph(EXPLAIN)
        if hoisted is not None:
            code = "# computed once per parameter change:" + hoisted[0].code + code
        return code

    @property
    def graph(self) -> OpGraph:
        """The model as ops (name, kind, inputs, output shape, first/last) in execution order; read-only."""
        return self._graph

    @property
    def nodes(self) -> list[str]:
        """Names of the model's ops, in execution order."""
        return [op.name for op in self._graph.ops]


_COMPILABLE = ("explain", "propagate")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def target_tensor(target: int | torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """A normalized target (see `normalize_target`) as a long tensor (batch,) on x's device, or None: what a compiled
    graph takes, so that neither a class index nor its type becomes a guard that recompiles the graph."""
    if target is None:
        return None
    if isinstance(target, int):
        return torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
    return target.to(x.device)


def _one_hot_checked_outside(y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """`prims.one_hot` for a compiled graph: the target is a long tensor (batch,) that `normalize_target` already
    range-checked outside the compiled region (the check inside `prims.one_hot` reads a tensor's value, which
    torch.compile cannot trace without a graph break), or None for the predicted class."""
    n, k = y.shape[0], y.shape[1]
    idx = y.reshape(n, k, -1).sum(-1).argmax(1) if target is None else target
    shape = (n, k) + (1,) * (y.dim() - 2)
    return (
        torch.zeros((n, k), dtype=y.dtype, device=y.device).scatter_(1, idx[:, None], 1.0).reshape(shape).expand_as(y)
    )


#: prims whose eager form checks tensor values in Python, and their compile-friendly replacements
_DYNAMO_REPLACEMENTS: dict[Callable[..., Any], Callable[..., Any]] = {prims.one_hot: _one_hot_checked_outside}


def dynamo_friendly(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of a built explain/propagate graph for ``torch.compile``: the same nodes (sharing the model's
    modules), with value-checking prims replaced by their checked-outside forms (`_DYNAMO_REPLACEMENTS`)."""
    graph = fx.Graph()
    out = graph.graph_copy(gm.graph, {})
    graph.output(out)
    for n in graph.nodes:
        if n.op == "call_function" and n.target in _DYNAMO_REPLACEMENTS:
            n.target = _DYNAMO_REPLACEMENTS[n.target]
    return fx.GraphModule(gm, graph, class_name=f"{type(gm).__name__}_compiled")


def _constant(v: Any) -> Callable[[], Any]:
    return lambda: v


def _rule_where(rule: A.Rule) -> str:
    pos = rule.pos
    return f"{pos.path or '<rules>'}:{pos.line}" if pos is not None else "the default rule"


def _reference_value(lw: Lowering, n: fx.Node) -> Any:
    """`x0`/`y0` in `init:`/`final:`: a value of the reference forward pass."""
    ref = lw.envs["ref"]
    if not ref:
        raise error_at(lw.em.pos, "`x0`/`y0` need a reference pass: add `reference: zeros` (or input) to the file")
    return ref[n]


def compile(
    model: nn.Module,
    rules: str | Path | A.RuleFile,
    example_input: torch.Tensor,
    *,
    leaf_modules: LeafSpec = (),
    fold_batchnorm: bool = True,
    check: bool = True,
    fitted: str | Path | dict | None = None,
    cache_parameters: bool = True,
    input_bounds: tuple[Any, Any] | None = None,
    on_nonfinite: OnNonfinite = "raise",
    torch_compile: bool | dict[str, Any] = False,
    **params: Any,
) -> Explainer:
    """Compiles `model` + a rule file into an `Explainer` (modified backprop as data; the methods and the rank-1
    collapse they are analysed for follow Sixt, Granz & Landgraf 2020, "When Explanations Lie").

    Args:
        model: a torch.fx-traceable ``nn.Module`` (or a ``GraphModule``); never modified.
        rules: a rule library name ("lrp-epsilon"), a rule file path, or a loaded ``RuleFile``.
        example_input: one batch shaped like the inputs to explain (shapes and dtypes are propagated from it).
        leaf_modules: module types or names traced as single calls.
        fold_batchnorm: fold a BatchNorm that follows a conv/linear into it (otherwise an `affine` node).
        check: evaluate every rule body on meta tensors first (shape errors at the rule's line).
        fitted: statistics saved by ``save_fitted`` for rules with ``fit:`` (else run ``rulelang.fit``).
        cache_parameters: compute weight-only tensors (w.pos, folded BatchNorm, ...) once; recomputed when a
            parameter is replaced or its version/dtype/device/shape changes. In-place ``.data`` edits need
            ``explainer.refresh()``.
        input_bounds: ``(lo, hi)`` range of the model input (scalars or per channel), for DTD's z^B rule and
            the static analysis.
        on_nonfinite: "raise", "warn" or "ignore": what a call does when the attribution holds NaN/inf.
        torch_compile: True (or a dict of ``torch.compile`` options) runs the explaining graph through
            ``torch.compile``: ``explainer.compile(**options)``. The checks stay eager; the first call compiles.
        **params: overrides of the rule file's ``params:``.

    Returns:
        The ``Explainer`` (``explainer(x, target)``, ``.explain``, ``.propagate``, ``.plan``, ``.code``).

    Raises:
        RuleError: the rule file is invalid or a parameter violates ``require:``.
        CompileError: a node matches no rule (fail closed, each listed), the model cannot be traced, or a
            rule body gives relevance of the wrong shape.
        ModelError: the model has forward hooks, or `example_input` does not fit it.
    """
    from ..lang.loader import load
    from ..models.checks import check_input as check_builtin_input

    if on_nonfinite not in _ON_NONFINITE:
        raise ExplainError(f"on_nonfinite must be one of {', '.join(_ON_NONFINITE)}; got {on_nonfinite!r}")
    if not isinstance(torch_compile, (bool, dict)):
        raise ExplainError(
            f"torch_compile must be True, False or a dict of torch.compile options, got {torch_compile!r}"
        )
    if isinstance(rules, A.RuleFile):
        rf = load(rules.path, **params) if params and rules.path else rules
    else:
        rf = load(rules, **params)
    if isinstance(model, nn.Module):
        check_no_hooks(model)
        check_example_input(example_input, model)
        check_builtin_input(model, example_input)  # a built-in model names the data set it expects
    gm = trace(model, example_input, leaf_modules)
    graph = build_opgraph(gm, fold_batchnorm=fold_batchnorm)
    plan = match(graph, rf)
    source = Source(model, example_input.detach(), tuple(leaf_modules), fold_batchnorm, check)
    explainer = Explainer(
        graph,
        plan,
        rf,
        cache_parameters=cache_parameters,
        input_bounds=input_bounds,
        on_nonfinite=on_nonfinite,
        source=source,
    )
    if fitted is not None:
        if isinstance(fitted, dict):
            explainer.set_fitted(fitted)
        else:
            explainer.load_fitted(fitted)
    if check and not (rf.fit and fitted is None):
        check_graph(explainer, example_input)
    if torch_compile is not False:
        explainer.compile(**(torch_compile if isinstance(torch_compile, dict) else {}))
    return explainer
