"""The op catalog: one spec row per op kind (rulelang/lang/kinds.py), and which kind a traced fx node is.

A row (`KindSpec`) says how the kind is recognised (module types, functions, tensor methods: module,
functional, torch, tensor-method, operator and in-place call forms of the same op map to one kind) and which
facts the compiler and the static analysis may rely on: the sign of its output and the sign of its Jacobian.
The lookup tables `MODULE_KINDS`, `FUNCTION_KINDS` and `METHOD_KINDS` are derived from the rows.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..lang.kinds import Kind

#: "nonneg": the output is >= 0 whatever the input; "preserves": the output is >= 0 when every activation
#: input is (max, mean, routing, sums); None: nothing is known.
OutputSign = Literal["nonneg", "preserves"] | None
#: "nonneg": every Jacobian entry is >= 0 (masks, routing, averaging, sums); "weights": the Jacobian is the
#: op's weight `w` (its sign is the weights' sign); None: nothing is known.
JacobianSign = Literal["nonneg", "weights"] | None


@dataclass(frozen=True)
class KindSpec:
    """One op kind: how the catalog recognises it and what it guarantees.

    Attributes:
        kind: the kind this row describes.
        modules: nn.Module types whose calls are this kind.
        functions: functions (torch, F, operator) whose calls are this kind.
        methods: tensor method names whose calls are this kind.
        output_sign: sign fact of the output (see `OutputSign`); never claims more than holds for every
            recognised callable.
        jacobian_sign: sign fact of the Jacobian w.r.t. each activation input (see `JacobianSign`).
        generic: True when the compiler has no dedicated implementation for the kind and replays the traced
            call (forward) and differentiates the replay with torch.func (vjp) — declared, so the table test
            tells an intended fallback from a forgotten implementation.
    """

    kind: Kind
    modules: tuple[type, ...] = ()
    functions: tuple[Callable[..., Any], ...] = ()
    methods: tuple[str, ...] = ()
    output_sign: OutputSign = None
    jacobian_sign: JacobianSign = None
    generic: bool = False

    @property
    def parametric(self) -> bool:
        """Whether the op owns a weight `w` and bias `b` (a language fact: read from the `Kind`)."""
        return self.kind.parametric

    @property
    def arity(self) -> int | None:
        """Activation inputs of a node of this kind: 1, or None for one or more (read from the `Kind`)."""
        return self.kind.arity


def _stochastic_depth() -> tuple[Callable[..., Any], ...]:
    try:  # torchvision's stochastic depth is the identity at explanation time
        from torchvision.ops import stochastic_depth
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return ()
    return (stochastic_depth,)


#: the facts of an op that selects, averages or sums its input
_ROUTING: dict[str, Any] = {"output_sign": "preserves", "jacobian_sign": "nonneg"}

#: One row per op kind (order is irrelevant: every callable belongs to exactly one row).
SPECS: dict[Kind, KindSpec] = {
    s.kind: s
    for s in [
        KindSpec(
            Kind.CONV,
            modules=(nn.Conv1d, nn.Conv2d, nn.Conv3d),
            functions=(F.conv1d, F.conv2d, F.conv3d),
            jacobian_sign="weights",
        ),
        KindSpec(Kind.DENSE, modules=(nn.Linear,), functions=(F.linear,), jacobian_sign="weights"),
        # F.batch_norm in eval form (timm's BatchNormAct2d); with training=True it normalises by batch statistics
        # and is `other` (see node_kind)
        KindSpec(
            Kind.AFFINE,
            modules=(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d),
            functions=(F.batch_norm,),
            jacobian_sign="weights",
        ),
        KindSpec(
            Kind.RELU,
            modules=(nn.ReLU,),
            functions=(F.relu, torch.relu, torch.relu_, F.relu_),
            methods=("relu", "relu_"),
            output_sign="nonneg",
            jacobian_sign="nonneg",
        ),
        # signed outputs (tanh, gelu, silu, ...) and Jacobians (silu, gelu, PReLU with a negative slope): no facts
        KindSpec(
            Kind.ACTIVATION,
            modules=(
                nn.Sigmoid,
                nn.Tanh,
                nn.SiLU,
                nn.GELU,
                nn.Hardswish,
                nn.Hardsigmoid,
                nn.ELU,
                nn.LeakyReLU,
                nn.Softplus,
                nn.Mish,
                nn.ReLU6,
                nn.Hardtanh,
                nn.PReLU,
                nn.SELU,
                nn.CELU,
                nn.Softsign,
                nn.Tanhshrink,
            ),
            functions=(
                torch.sigmoid,
                F.sigmoid,
                torch.tanh,
                F.tanh,
                F.silu,
                F.gelu,
                F.hardswish,
                F.hardsigmoid,
                F.relu6,
                F.hardtanh,
                F.elu,
                F.leaky_relu,
                F.softplus,
                F.mish,
                F.selu,
                F.celu,
            ),
            methods=("sigmoid", "sigmoid_", "tanh", "tanh_"),
        ),
        KindSpec(
            Kind.MAXPOOL,
            modules=(
                nn.MaxPool1d,
                nn.MaxPool2d,
                nn.MaxPool3d,
                nn.AdaptiveMaxPool1d,
                nn.AdaptiveMaxPool2d,
                nn.AdaptiveMaxPool3d,
            ),
            functions=(
                F.max_pool1d,
                F.max_pool2d,
                F.max_pool3d,
                F.adaptive_max_pool1d,
                F.adaptive_max_pool2d,
                F.adaptive_max_pool3d,
            ),
            **_ROUTING,
        ),
        KindSpec(
            Kind.AVGPOOL,
            modules=(
                nn.AvgPool1d,
                nn.AvgPool2d,
                nn.AvgPool3d,
                nn.AdaptiveAvgPool1d,
                nn.AdaptiveAvgPool2d,
                nn.AdaptiveAvgPool3d,
            ),
            functions=(
                F.avg_pool1d,
                F.avg_pool2d,
                F.avg_pool3d,
                F.adaptive_avg_pool1d,
                F.adaptive_avg_pool2d,
                F.adaptive_avg_pool3d,
                torch.mean,
            ),
            methods=("mean",),
            **_ROUTING,
        ),
        # facts hold without `alpha` (torch.add(a, b, alpha=-1) subtracts): `output_nonneg` checks for it
        KindSpec(
            Kind.ADD,
            functions=(operator.add, operator.iadd, torch.add),
            methods=("add", "add_", "__add__", "__iadd__", "__radd__"),
            **_ROUTING,
        ),
        KindSpec(
            Kind.MUL,
            functions=(operator.mul, operator.imul, torch.mul),
            methods=("mul", "mul_", "__mul__", "__rmul__"),
        ),
        KindSpec(Kind.CAT, functions=(torch.cat, torch.concat, torch.stack), **_ROUTING),
        # padding with a negative constant breaks the output fact: `output_nonneg` checks for it
        KindSpec(
            Kind.RESHAPE,
            modules=(
                nn.Flatten,
                nn.Unflatten,
                nn.ZeroPad1d,
                nn.ZeroPad2d,
                nn.ZeroPad3d,
                nn.ConstantPad1d,
                nn.ConstantPad2d,
                nn.ConstantPad3d,
                nn.ChannelShuffle,
            ),
            functions=(
                torch.flatten,
                torch.reshape,
                torch.permute,
                torch.transpose,
                torch.squeeze,
                torch.unsqueeze,
                torch.narrow,
                F.pad,
                operator.getitem,
                torch.swapaxes,
                torch.movedim,
                torch.chunk,
                torch.split,
                torch.unbind,
                F.channel_shuffle,
                torch.channel_shuffle,
                torch.unflatten,
                torch.roll,
            ),
            methods=(
                "view",
                "reshape",
                "flatten",
                "permute",
                "transpose",
                "contiguous",
                "squeeze",
                "unsqueeze",
                "narrow",
                "view_as",
                "reshape_as",
                "chunk",
                "split",
                "unbind",
                "swapaxes",
                "movedim",
                "__getitem__",
                "unflatten",
                "expand",
                "expand_as",
                "roll",
            ),
            **_ROUTING,
        ),
        KindSpec(
            Kind.DROPOUT,
            modules=(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout),
            functions=(F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, *_stochastic_depth()),
            **_ROUTING,
        ),
        KindSpec(Kind.IDENTITY, modules=(nn.Identity,), **_ROUTING),
        # log_softmax is negative: no output fact for the kind
        KindSpec(
            Kind.SOFTMAX,
            modules=(nn.Softmax, nn.LogSoftmax, nn.Softmax2d),
            functions=(F.softmax, torch.softmax, F.log_softmax, torch.log_softmax),
            methods=("softmax", "log_softmax"),
        ),
        KindSpec(
            Kind.NORM,
            modules=(
                nn.LayerNorm,
                nn.GroupNorm,
                nn.InstanceNorm1d,
                nn.InstanceNorm2d,
                nn.InstanceNorm3d,
                nn.LocalResponseNorm,
                nn.RMSNorm,
            ),
            # F.normalize: x / max(||x||_p, eps) along `dim` (Swin V2's cosine attention)
            functions=(F.layer_norm, F.group_norm, F.instance_norm, F.local_response_norm, F.rms_norm, F.normalize),
        ),
        KindSpec(
            Kind.MATMUL,
            functions=(torch.matmul, operator.matmul, torch.bmm, torch.einsum),
            methods=("matmul", "bmm"),
        ),
        KindSpec(Kind.OTHER, generic=True),
    ]
}

#: Derived lookup tables (module types in row order; a function or method name belongs to one row).
MODULE_KINDS: list[tuple[tuple[type, ...], Kind]] = [(s.modules, s.kind) for s in SPECS.values() if s.modules]
FUNCTION_KINDS: dict[Any, Kind] = {f: s.kind for s in SPECS.values() for f in s.functions}
METHOD_KINDS: dict[str, Kind] = {m: s.kind for s in SPECS.values() for m in s.methods}

#: In-place call forms and their out-of-place twins (replayed ops must never overwrite an activation).
INPLACE_FUNCTIONS: dict[Any, Any] = {
    operator.iadd: operator.add,
    operator.imul: operator.mul,
    operator.isub: operator.sub,
    operator.itruediv: operator.truediv,
    torch.relu_: torch.relu,
    F.relu_: F.relu,
}
INPLACE_METHODS: dict[Any, str] = {
    "relu_": "relu",
    "add_": "add",
    "mul_": "mul",
    "sigmoid_": "sigmoid",
    "tanh_": "tanh",
    "clamp_": "clamp",
    "sub_": "sub",
    "div_": "div",
}


def module_kind(module: nn.Module) -> Kind:
    """The op kind of a call of `module` (`other` when no row recognises its type)."""
    for types, kind in MODULE_KINDS:
        if isinstance(module, types):
            return kind
    return Kind.OTHER


def node_kind(node: fx.Node, root: nn.Module) -> Kind:
    """The op kind of one call node (placeholders, get_attr and output are not ops)."""
    if node.op == "call_module":
        return module_kind(root.get_submodule(str(node.target)))
    if node.op == "call_function":
        kind = FUNCTION_KINDS.get(node.target, Kind.OTHER)
        if node.target in (operator.truediv, torch.div) and not _is_node(node.args[1]):
            return Kind.MUL  # division by a constant is a scaling
        if node.target is F.batch_norm and not batch_norm_is_affine(node):
            return Kind.OTHER
        return kind
    if node.op == "call_method":
        if node.target in ("div", "__truediv__") and len(node.args) > 1 and not _is_node(node.args[1]):
            return Kind.MUL
        return METHOD_KINDS.get(str(node.target), Kind.OTHER)
    raise ValueError(f"node {node.name} ({node.op}) is not an op")


def output_nonneg(kind: Kind, node: fx.Node, root: nn.Module, inputs_nonneg: bool) -> bool:
    """Whether the output of `node` (of `kind`) is known to be >= 0, given whether all its activation inputs are.

    Reads the row's `output_sign`; two call forms of `preserves` kinds break the fact and are checked here:
    `add` with an `alpha` (it may subtract) and padding with a negative constant.
    """
    sign = SPECS[kind].output_sign
    if sign == "nonneg":
        return True
    if sign != "preserves" or not inputs_nonneg:
        return False
    if kind == Kind.ADD:
        return "alpha" not in node.kwargs and not (node.target is torch.add and len(node.args) > 2)
    if kind == Kind.RESHAPE:
        return _pad_value(node, root) >= 0
    return True


def _pad_value(node: fx.Node, root: nn.Module) -> float:
    """The fill value of a constant-padding call (0 for every other call)."""
    if node.op == "call_module":
        value = getattr(root.get_submodule(str(node.target)), "value", 0.0)
    elif node.op == "call_function" and node.target is F.pad:
        mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
        if mode != "constant":
            return 0.0  # reflect / replicate / circular copy input values
        value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
    else:
        return 0.0
    return float(value) if isinstance(value, (int, float)) else (0.0 if value is None else -1.0)


#: F.batch_norm's positional arguments
BATCH_NORM_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")


def batch_norm_arguments(node: fx.Node) -> dict[str, Any]:
    """A functional batch norm's arguments by name, with F.batch_norm's defaults."""
    kw: dict[str, Any] = {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5}
    kw.update(zip(BATCH_NORM_ARGS, node.args))
    kw.update(node.kwargs)
    return kw


def batch_norm_is_affine(node: fx.Node) -> bool:
    """An F.batch_norm call with running statistics and training=False: a fixed per-channel affine map."""
    kw = batch_norm_arguments(node)
    return kw["training"] is False and _is_node(kw["running_mean"]) and _is_node(kw["running_var"])


def _is_node(a: Any) -> bool:
    return isinstance(a, fx.Node)


def describe_target(node: fx.Node, root: nn.Module) -> str:
    """A readable target: `Conv2d features.0`, `torch.cat`, `Tensor.view`, `operator.add`."""
    if node.op == "call_module":
        return f"{type(root.get_submodule(str(node.target))).__name__} {node.target}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    t = node.target
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__name__", str(t))
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    if mod.startswith("torch._C") or mod == "torch":
        return f"torch.{name}"
    return f"{mod}.{name}" if mod else name


def source_line(node: fx.Node) -> str | None:
    """`file.py:LINE: code` of the innermost frame outside torch that created the node, when recorded."""
    trace = node.stack_trace or ""
    lines = trace.strip().splitlines()
    best = None
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith('File "') and "/torch/" not in s and "/torch\\" not in s and "decompose.py" not in s:
            try:
                path = s.split('"')[1]
                lineno = int(s.split("line ")[1].split(",")[0])
            except (IndexError, ValueError):
                continue
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            best = f"{path.rsplit('/', 1)[-1]}:{lineno}: {code}"
    return best
