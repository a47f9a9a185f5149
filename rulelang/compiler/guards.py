"""What an explainer checks of its arguments and of the user's model, at compile time and on every call.

Compile time: the model has no forward hooks or pre-hooks (their effect would be in the model's output but not in
the relevance pass). Every call: the model still has no hooks and the same submodules (a cheap identity check);
the target, `keep`, input, reference and injected relevance are of a usable type and shape. Each problem is one
`ModelError` (compile time) or `ExplainError` (call time) naming what is wrong and what to do.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from ..errors import ExplainError, ModelError
from ..graph.ir import Op, OpGraph
from ..types import Keep, Target

__all__ = [
    "Keep",
    "Target",
    "ModelSnapshot",
    "check_example_input",
    "check_input",
    "check_no_hooks",
    "check_reference",
    "check_relevance",
    "forward_hooks",
    "model_dtype",
    "normalize_keep",
    "normalize_target",
    "unsupported_in_precision",
    "SUPPORTED_DTYPES",
]


# ------------------------------------------------------------------------------------------------- hooks
def _describe_hook(hook: Callable[..., Any]) -> str:
    name = getattr(hook, "__qualname__", None) or type(hook).__name__
    try:
        file = inspect.getsourcefile(hook)
        line = inspect.getsourcelines(hook)[1]
        return f"`{name}` ({str(file).rsplit('/', 1)[-1]}:{line})"
    except (TypeError, OSError):
        return f"`{name}`"


def forward_hooks(model: nn.Module) -> list[str]:
    """Descriptions of the forward hooks and pre-hooks that would run when `model` is called (global ones too)."""
    found = []
    for kind, table in (
        ("global forward hook", torch_module._global_forward_hooks),
        ("global forward pre-hook", torch_module._global_forward_pre_hooks),
    ):
        found += [f"{kind} {_describe_hook(h)}" for h in table.values()]
    for path, m in model.named_modules():
        found += _module_hooks(path, m)
    return found


def _module_hooks(path: str, m: nn.Module) -> list[str]:
    where = f"module `{path or '<root>'}` ({type(m).__name__})"
    found = [f"forward hook {_describe_hook(h)} on {where}" for h in m._forward_hooks.values()]
    return found + [f"forward pre-hook {_describe_hook(h)} on {where}" for h in m._forward_pre_hooks.values()]


def check_no_hooks(model: nn.Module) -> None:
    """Refuses a model with forward hooks: what they compute is in its output but not in any relevance rule."""
    hooks = forward_hooks(model)
    if hooks:
        more = f" (and {len(hooks) - 1} more)" if len(hooks) > 1 else ""
        raise ModelError(
            f"the model has a {hooks[0]}{more}: rulelang explains the model's own forward computation, and a hook "
            "can change it without the relevance pass seeing it. Remove the hook (handle.remove()) before "
            "compiling and explaining, or move what it computes into the model's forward"
        )


class ModelSnapshot:
    """The user's module tree as compiled: each module's children by identity. `problem()` is cheap enough for
    every call (one tuple comparison and two dict truth tests per module: ~70 us for ResNet-50's 151 modules) and
    says what changed: a hook added, or a submodule replaced, added or removed."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.tree = [(path, m, tuple(m._modules.items())) for path, m in model.named_modules()]
        self._fast = [
            (m._modules, tuple(m._modules.values()), m._forward_hooks, m._forward_pre_hooks) for _, m, _ in self.tree
        ]

    def problem(self) -> str | None:
        if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
            return f"a {forward_hooks(self.model)[0]} was registered after compiling"
        for children, values, hooks, pre_hooks in self._fast:
            if hooks or pre_hooks or tuple(children.values()) != values:
                return self._describe()
        return None

    def _describe(self) -> str | None:
        for path, m, children in self.tree:
            now = m._modules
            if len(now) != len(children) or any(now.get(k) is not c for k, c in children):
                return self._replaced(path, m, children)
            if m._forward_hooks or m._forward_pre_hooks:
                return f"a {_module_hooks(path, m)[0]} was registered after compiling"
        return None

    @staticmethod
    def _replaced(path: str, m: nn.Module, children: tuple) -> str:
        now = m._modules
        for k, c in children:
            if now.get(k) is not c:
                new = now.get(k)
                what = f"replaced by a {type(new).__name__}" if new is not None else "removed"
                return f"submodule `{f'{path}.{k}' if path else k}` ({type(c).__name__}) was {what} after compiling"
        added = [k for k in now if k not in dict(children)]
        return f"submodule `{f'{path}.{added[0]}' if path else added[0]}` was added after compiling"


# ---------------------------------------------------------------------------------------------- targets
def _bad_target(target: Any, why: str) -> ExplainError:
    shown = (
        repr(target)
        if not isinstance(target, torch.Tensor)
        else f"a {target.dtype} tensor of shape {tuple(target.shape)}"
    )
    return ExplainError(
        f"target must be a class index (int), one per sample (a sequence, integer tensor or array), or None for "
        f"the predicted class; got {shown}: {why}"
    )


def normalize_target(target: Any, batch: int, classes: int) -> int | torch.Tensor | None:
    """The target as None, an int in [0, classes) or a long tensor of shape (batch,); negative indices count from
    the end like Python's. Floats, bools and strings are errors, not rounded or parsed."""
    if target is None:
        return None
    if isinstance(target, (bool, str, bytes)) or type(target).__name__ == "bool_":
        return _reject_kind(target)
    if isinstance(target, numbers.Integral):
        idx = int(target)
        if not -classes <= idx < classes:
            raise ExplainError(_range_message(idx, classes))
        return idx % classes
    if isinstance(target, torch.Tensor):
        t = target
    elif hasattr(target, "__array__") and hasattr(target, "dtype"):  # numpy arrays and scalars
        kind = getattr(target.dtype, "kind", "")
        if kind not in "iu":
            raise _bad_target(target, f"its dtype is {target.dtype}, not an integer type")
        t = torch.as_tensor(target)
    elif isinstance(target, Sequence):
        items = list(target)
        for v in items:
            if isinstance(v, (bool, str, bytes)) or not isinstance(v, numbers.Integral):
                raise _bad_target(target, f"it holds {v!r}, not an integer")
        t = torch.tensor(items, dtype=torch.long) if items else torch.empty(0, dtype=torch.long)
    else:
        raise _bad_target(target, f"{type(target).__name__} is not a class index")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise _bad_target(target, f"its dtype is {t.dtype}, not an integer type (no rounding: pass .long() if meant)")
    if t.dim() > 1:
        raise _bad_target(target, "expected a scalar or one index per sample (1-d)")
    t = t.reshape(-1).long()
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ExplainError(f"target has {t.numel()} entries for a batch of {batch}: give one class per sample or one")
    if t.numel() and t.device.type != "meta":
        lo, hi = int(t.min()), int(t.max())
        if lo < -classes or hi >= classes:
            raise ExplainError(_range_message(lo if lo < -classes else hi, classes))
    return torch.where(t < 0, t + classes, t)


def _reject_kind(target: Any) -> Any:
    raise _bad_target(target, f"{type(target).__name__} is not a class index")


def _range_message(idx: int, classes: int) -> str:
    return (
        f"target class {idx} out of range: the model's output has {classes} entries along dim 1 (the axis `target` "
        f"indexes), so valid classes are 0..{classes - 1} (or -{classes}..-1 counting from the end)"
    )


# ------------------------------------------------------------------------------------------------- keep
def normalize_keep(keep: Any, graph: OpGraph) -> bool | frozenset[str]:
    """`keep=` as False (nothing), True (every node) or the frozen set of op names to keep."""
    if keep is None or keep is False:
        return False
    if keep is True or (isinstance(keep, str) and keep == "all"):
        return True
    if isinstance(keep, str):
        raise ExplainError(
            f"keep={keep!r} is not understood: use keep=True or 'all' for every node, or a list of node names "
            f"(keep=[{keep!r}])"
        )
    if isinstance(keep, (list, tuple, set, frozenset)) and all(isinstance(k, str) for k in keep):
        names = set()
        for k in keep:
            try:
                names.add(graph.op(k).name)
            except KeyError as e:
                raise ExplainError(f"keep: {e.args[0]}") from None
        return frozenset(names)
    raise ExplainError(
        f"keep must be True, 'all', a list of node names, or None/False; got {type(keep).__name__} {keep!r}"
    )


# ----------------------------------------------------------------------------------------------- inputs
def _shape(t: Any) -> str:
    return str(tuple(t.shape))


def check_input(x: Any, example_shape: tuple[int, ...], model: nn.Module, what: str = "x") -> None:
    """A call's input: one floating tensor with a non-empty batch, the compiled rank, the model's dtype/device."""
    if not isinstance(x, torch.Tensor):
        raise ExplainError(f"{what} must be a torch.Tensor shaped like example_input, got {type(x).__name__}")
    if x.dim() != len(example_shape):
        hint = " (add the batch dimension: x.unsqueeze(0))" if x.dim() == len(example_shape) - 1 else ""
        raise ExplainError(
            f"{what} has shape {_shape(x)}, but the explainer was compiled for inputs of shape {example_shape} "
            f"(batch first){hint}"
        )
    if x.shape[0] == 0:
        raise ExplainError(f"{what} has batch size 0: there is nothing to explain")
    if not x.is_floating_point():
        raise ExplainError(
            f"{what} is a {x.dtype} tensor; rulelang explains floating-point inputs (integer inputs such as token "
            "ids have no gradient: explain from the embedding output instead)"
        )
    ref = _reference_tensor(model)
    if ref is not None and (ref.dtype != x.dtype or ref.device != x.device):
        raise ExplainError(
            f"{what} is {x.dtype} on {x.device} but the model's parameters are {ref.dtype} on {ref.device}: pass "
            f"x.to({ref.dtype}) (or move the explainer and its model: explainer.to({x.dtype}), .to('{x.device}'))"
        )


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter (else buffer): the precision the explainer computes in."""
    ref = _reference_tensor(model)
    return ref.dtype if ref is not None else None


# ------------------------------------------------------------------------------------------- precision
#: dtypes an explainer computes in: the model's and the input's (float16 and bfloat16 as far as torch has kernels)
SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_LOW_PRECISION = (torch.bfloat16, torch.float16)


def _float32_only() -> dict[Any, str]:
    from . import prims

    return {prims.percentile: "`percentile` (torch.quantile has no float16/bfloat16 kernel)"}


def unsupported_in_precision(gm: torch.fx.GraphModule, dtype: torch.dtype) -> str | None:
    """What in a built explaining graph cannot run in `dtype` (a low precision), or None when all of it can."""
    if dtype not in _LOW_PRECISION:
        return None
    table = _float32_only()
    used = sorted({table[n.target] for n in gm.graph.nodes if n.op == "call_function" and n.target in table})
    return f"it uses {', '.join(used)}" if used else None


def _check_dtype(dtype: torch.dtype, what: str) -> None:
    if dtype not in SUPPORTED_DTYPES:
        raise ModelError(
            f"{what} is {dtype}; rulelang explains in float32, float64, bfloat16 or float16: cast the model and the "
            "input (model.float(), x.float())"
        )


def _reference_tensor(model: nn.Module) -> torch.Tensor | None:
    for p in model.parameters():
        if p.is_floating_point():
            return p
    for b in model.buffers():
        if b.is_floating_point():
            return b
    return None


def check_example_input(example_input: Any, model: nn.Module) -> None:
    """The compile-time input: a floating tensor with a non-empty batch dimension, the model's dtype."""
    if not isinstance(example_input, torch.Tensor):
        return  # the tracer says what it expects
    if example_input.dim() == 0:
        raise ModelError("example_input is a scalar; give a batch of inputs, batch first (e.g. shape (1, 3, 32, 32))")
    if example_input.shape[0] == 0:
        raise ModelError(f"example_input has batch size 0 (shape {_shape(example_input)}); give at least one sample")
    if not example_input.is_floating_point():
        raise ModelError(
            f"example_input is a {example_input.dtype} tensor; rulelang explains models of floating-point inputs "
            "(an embedding's token ids have no gradient): wrap the model so that its forward takes the embeddings"
        )
    _check_dtype(example_input.dtype, "example_input")
    ref = _reference_tensor(model)
    if ref is not None and ref.dtype != example_input.dtype:
        raise ModelError(
            f"example_input is {example_input.dtype} but the model's parameters are {ref.dtype}: cast one to the "
            f"other (model.to({example_input.dtype}) to explain in that precision, or example_input.to({ref.dtype}))"
        )


def check_reference(reference: Any, x: torch.Tensor) -> None:
    """A DeepLIFT-style reference input: a tensor shaped like x, like one sample of x, or with batch 1."""
    if reference is None:
        return
    if not isinstance(reference, torch.Tensor):
        raise ExplainError(f"reference must be a tensor shaped like x {_shape(x)}, got {type(reference).__name__}")
    ok = tuple(reference.shape) in (tuple(x.shape), tuple(x.shape[1:]), (1,) + tuple(x.shape[1:]))
    if not ok:
        raise ExplainError(
            f"reference has shape {_shape(reference)}; it must be shaped like x {_shape(x)}, like one sample "
            f"{tuple(x.shape[1:])}, or with batch 1"
        )
    if not reference.is_floating_point():
        raise ExplainError(f"reference is a {reference.dtype} tensor; give a floating-point tensor like x")


def check_relevance(relevance: Any, op: Op, batch: int, like: torch.Tensor | None = None) -> None:
    """The relevance `propagate` injects: exactly the node's output shape for this batch, floating point, and (given
    the input `like`) of its dtype and device."""
    expected = (batch,) + tuple(op.shape[1:])
    if not isinstance(relevance, torch.Tensor):
        raise ExplainError(
            f"relevance for node {op.name} must be a tensor of shape {expected}, got {type(relevance).__name__}"
        )
    if tuple(relevance.shape) != expected:
        raise ExplainError(
            f"relevance for node {op.name} must have the node's output shape {expected} (batch {batch}), got "
            f"{_shape(relevance)}"
        )
    if not relevance.is_floating_point():
        raise ExplainError(f"relevance for node {op.name} is a {relevance.dtype} tensor; give a floating-point tensor")
    if like is not None and (relevance.dtype != like.dtype or relevance.device != like.device):
        raise ExplainError(
            f"relevance for node {op.name} is {relevance.dtype} on {relevance.device} but x is {like.dtype} on "
            f"{like.device}: pass relevance.to(x) (the relevance pass computes in the model's precision)"
        )
