"""Tracing: a PyTorch model becomes a `torch.fx.GraphModule` with shapes and dtypes on every node.

The user's model is never changed: its `training` flags are restored after tracing in eval mode, and shape
propagation runs on meta tensors, so no buffer (e.g. BatchNorm statistics) is touched.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import traceback
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.fx as fx
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ..errors import CompileError, ModelError
from .decompose import DecomposingTracer
from .windows import inline_wrapped_calls

LeafSpec = Iterable[type | str]


class _Tracer(DecomposingTracer):
    """A tracer that records stack traces, treats user-chosen module types or paths as leaves and writes
    attention as its parts (rulelang/graph/decompose.py)."""

    def __init__(self, leaf_modules: LeafSpec = ()) -> None:
        super().__init__()
        self.record_stack_traces = True
        specs = list(leaf_modules)
        self._leaf_types = tuple(s for s in specs if isinstance(s, type))
        self._leaf_paths = {s for s in specs if isinstance(s, str)}

    def keep_whole(self, m: torch.nn.Module, qualname: str) -> bool:
        return isinstance(m, self._leaf_types) or qualname in self._leaf_paths

    def _filter_traceback_frames(self, user_stack_summary: traceback.StackSummary) -> traceback.StackSummary:
        """fx's filter (the frames from the first `forward` on), dropping torch's own frames by path: fx's list of
        torch's files (`uninteresting_files`) imports torch.export, inductor and networkx on its first use, 0.25-0.4 s
        CPU of a process's first compile. Only frames outside torch matter here (`catalog.source_line`)."""
        frames = list(user_stack_summary)
        start = next((i for i, f in enumerate(frames) if f.name == "forward"), len(frames))
        return traceback.StackSummary.from_list([f for f in frames[start:] if not _is_torch_file(f.filename)])

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        if self.keep_whole(m, qualname):
            return True
        return super().is_leaf_module(m, qualname)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Puts every submodule in eval mode and restores each one's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def trace(model: torch.nn.Module, example_input: torch.Tensor, leaf_modules: LeafSpec = ()) -> fx.GraphModule:
    """Symbolically traces `model` (or reuses it when it already is a GraphModule) and annotates shapes."""
    if not isinstance(model, torch.nn.Module):
        raise CompileError(f"expected a torch.nn.Module to explain, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise CompileError(
            "example_input must be one tensor shaped like the model's input "
            f"(got {type(example_input).__name__}); models with several inputs are not supported"
        )
    with eval_mode(model):
        if isinstance(model, fx.GraphModule):
            gm = model
        else:
            try:
                graph = _Tracer(leaf_modules).trace(model, concrete_args=_defaulted_args(model))
            except Exception as e:  # fx raises many types; all mean "cannot be traced symbolically"
                raise CompileError(
                    f"torch.fx cannot trace {type(model).__name__}: {type(e).__name__}: {e}\n"
                    "  Symbolic tracing fails on data-dependent Python control flow (if/for on tensor values) and "
                    "on calls fx cannot see through. Fix: pass leaf_modules=[TheOffendingModuleClass] so it is "
                    "treated as one op, rewrite the branch with torch.where, or pass a torch.fx.GraphModule you "
                    "built yourself."
                ) from None
            _drop_defaulted_inputs(graph)
            gm = fx.GraphModule(model, graph, class_name=type(model).__name__)
        _check_io(gm)
        if gm is not model:  # fx-wrapped calls (Swin's window attention) as their ops; a user's graph is kept
            inline_wrapped_calls(gm, example_input)
        _propagate_shapes(gm, example_input)
    return gm


_SIMPLE_DEFAULTS = (type(None), bool, int, float, str)


def _defaulted_args(model: torch.nn.Module) -> dict[str, Any] | None:
    """The forward's optional arguments after the first (`attn_mask=None`, `is_causal=False`) at their defaults:
    they are settings of the call, not inputs to explain (fx would make each one a graph input)."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    out = {
        p.name: p.default
        for p in params[1:]
        if p.default is not inspect.Parameter.empty
        and isinstance(p.default, _SIMPLE_DEFAULTS)
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return out or None


def _drop_defaulted_inputs(graph: fx.Graph) -> None:
    """Removes the inputs fx keeps for arguments fixed at their defaults (with the asserts guarding them) and
    unused `*args` / `**kwargs` inputs, so that the model input is the only placeholder left."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for p in placeholders[1:]:
        if len(p.args) != 1 and not str(p.target).startswith("*"):
            continue  # no default value: a real second input (reported by _check_io)
        dependent = _dependents(p)
        if all(_is_guard(n) for n in dependent):
            for n in reversed(list(graph.nodes)):
                if n in dependent:
                    graph.erase_node(n)
            graph.erase_node(p)


def _dependents(p: fx.Node) -> set[fx.Node]:
    out: set[fx.Node] = set()
    todo = list(p.users)
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo.extend(n.users)
    return out


def _is_guard(n: fx.Node) -> bool:
    """The nodes fx's concrete_args adds: `x == default`, `torch._assert(...)`, `_assert_is_none(...)`."""
    import operator

    name = getattr(n.target, "__name__", "")
    return n.op == "call_function" and (n.target is operator.eq or name in ("_assert", "_assert_is_none"))


def _check_io(gm: fx.GraphModule) -> None:
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        names = ", ".join(n.name for n in inputs)
        raise CompileError(
            f"the model takes {len(inputs)} inputs ({names}); rulelang explains models with one "
            "input tensor: wrap it, e.g. `lambda x: model(x, other)` in an nn.Module"
        )
    out = next(n for n in gm.graph.nodes if n.op == "output")
    result = out.args[0]
    if not isinstance(result, fx.Node):
        raise CompileError(
            "the model returns several outputs (a tuple, list or dict); rulelang explains one output "
            "tensor: wrap the model so that forward returns the tensor to explain (e.g. the logits)"
        )


def _propagate_shapes(gm: fx.GraphModule, example_input: torch.Tensor) -> None:
    """Shapes and dtypes by running the graph once on the example input's meta twin with meta parameters."""
    meta_state = {
        k: torch.empty_like(v, device="meta")
        for k, v in list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False))
    }
    meta_input = torch.empty_like(example_input, device="meta")
    try:
        with torch.nn.utils.stateless._reparametrize_module(gm, meta_state), torch.no_grad(), _quiet():
            ShapeProp(gm).propagate(meta_input)
    except Exception:
        # some ops have no meta kernel: fall back to a real run on the example input (eval mode, no grad)
        try:
            with torch.no_grad(), _quiet():
                ShapeProp(gm).propagate(example_input.detach())
        except Exception as e:
            cause = e.__cause__ or e
            text = str(cause).strip()
            first = text.splitlines()[0] if text else ""
            raise ModelError(
                f"the model cannot run on example_input of shape {tuple(example_input.shape)} "
                f"({example_input.dtype}): {type(cause).__name__}: {first} (example_input is one batch, batch first)"
            ) from None
    for n in gm.graph.nodes:  # integer/boolean tensors (masks, indices) are not activations: see is_tensor_node
        meta = n.meta.get("tensor_meta")
        if isinstance(meta, TensorMetadata) and not meta.dtype.is_floating_point:
            n.meta["nonfloat_tensor_meta"] = n.meta.pop("tensor_meta")
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    meta = out.meta.get("tensor_meta", out.meta.get("nonfloat_tensor_meta"))
    if not isinstance(meta, TensorMetadata):
        raise ModelError("the model's output is not a tensor; rulelang explains one output tensor")
    if len(meta.shape) < 2:
        batch_hint = (
            f" (example_input {tuple(example_input.shape)} may lack its batch dimension: try x.unsqueeze(0))"
            if len(meta.shape) == 1 and meta.shape[0] != example_input.shape[0]
            else ""
        )
        raise ModelError(
            f"the model's output has shape {tuple(meta.shape)}; rulelang explains outputs shaped (batch, classes, "
            f"...) and `target` indexes dim 1{batch_hint}: wrap the model so that it returns e.g. out.unsqueeze(1)"
        )
    if not meta.dtype.is_floating_point:
        raise ModelError(f"the model's output is a {meta.dtype} tensor; rulelang explains floating-point outputs")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keeps ShapeProp from printing a traceback to stderr when the caller catches the error."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _is_torch_file(path: str) -> bool:
    return path.startswith(_TORCH_DIR) or path == "<string>"


def is_tensor_node(node: fx.Node) -> bool:
    """Whether shape propagation saw `node` produce one floating-point tensor: an activation. Integer and boolean
    tensors (masks such as `h > 0` in `torch.where(h > 0, h, 0.1 * h)`, indices) carry no relevance."""
    meta = node.meta.get("tensor_meta")
    return isinstance(meta, TensorMetadata) and meta.dtype.is_floating_point
