"""Tracing: a PyTorch model becomes a `torch.fx.GraphModule` with shapes and dtypes on every node.

The user's model is never changed: its `training` flags are restored after tracing in eval mode, and shape
propagation runs on meta tensors, so no buffer (e.g. BatchNorm statistics) is touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.fx as fx
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import CompileError

LeafSpec = Iterable[type | str]


class _Tracer(fx.Tracer):
    """A tracer that records stack traces and treats user-chosen module types or paths as leaves."""

    def __init__(self, leaf_modules: LeafSpec = ()) -> None:
        super().__init__()
        self.record_stack_traces = True
        specs = list(leaf_modules)
        self._leaf_types = tuple(s for s in specs if isinstance(s, type))
        self._leaf_paths = {s for s in specs if isinstance(s, str)}

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        if isinstance(m, self._leaf_types) or qualname in self._leaf_paths:
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
                graph = _Tracer(leaf_modules).trace(model)
            except Exception as e:  # fx raises many types; all mean "cannot be traced symbolically"
                raise CompileError(
                    f"torch.fx cannot trace {type(model).__name__}: {type(e).__name__}: {e}\n"
                    "  Symbolic tracing fails on data-dependent Python control flow (if/for on tensor values) and "
                    "on calls fx cannot see through. Fix: pass leaf_modules=[TheOffendingModuleClass] so it is "
                    "treated as one op, rewrite the branch with torch.where, or pass a torch.fx.GraphModule you "
                    "built yourself."
                ) from None
            gm = fx.GraphModule(model, graph, class_name=type(model).__name__)
        _check_io(gm)
        _propagate_shapes(gm, example_input)
    return gm


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
        with torch.nn.utils.stateless._reparametrize_module(gm, meta_state), torch.no_grad():
            ShapeProp(gm).propagate(meta_input)
    except Exception:
        # some ops have no meta kernel: fall back to a real run on the example input (eval mode, no grad)
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input.detach())
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if not _is_tensor_node(out):
        raise CompileError("the model's output is not a tensor; rulelang explains one output tensor")


def _is_tensor_node(node: fx.Node) -> bool:
    from torch.fx.passes.shape_prop import TensorMetadata

    return isinstance(node.meta.get("tensor_meta"), TensorMetadata)


def is_tensor_node(node: fx.Node) -> bool:
    """Whether shape propagation saw `node` produce one tensor."""
    return _is_tensor_node(node)
