"""The op catalog: which op kind (rulelang/lang/kinds.py) a traced fx node is.

Module, functional, torch, tensor-method, operator and in-place call forms of the same op map to one kind.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

MODULE_KINDS: list[tuple[tuple[type, ...], str]] = [
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d), "conv"),
    ((nn.Linear,), "dense"),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), "affine"),
    ((nn.ReLU,), "relu"),
    (
        (
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
        "activation",
    ),
    (
        (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d),
        "maxpool",
    ),
    (
        (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d),
        "avgpool",
    ),
    ((nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout), "dropout"),
    ((nn.Identity,), "identity"),
    (
        (
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
        "reshape",
    ),
    ((nn.Softmax, nn.LogSoftmax, nn.Softmax2d), "softmax"),
    (
        (
            nn.LayerNorm,
            nn.GroupNorm,
            nn.InstanceNorm1d,
            nn.InstanceNorm2d,
            nn.InstanceNorm3d,
            nn.LocalResponseNorm,
            nn.RMSNorm,
        ),
        "norm",
    ),
]

FUNCTION_KINDS: dict[Any, str] = {}
for _kind, _fns in {
    "relu": [F.relu, torch.relu, torch.relu_, F.relu_],
    "conv": [F.conv1d, F.conv2d, F.conv3d],
    "dense": [F.linear],
    "activation": [
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
    ],
    "maxpool": [
        F.max_pool1d,
        F.max_pool2d,
        F.max_pool3d,
        F.adaptive_max_pool1d,
        F.adaptive_max_pool2d,
        F.adaptive_max_pool3d,
    ],
    "avgpool": [
        F.avg_pool1d,
        F.avg_pool2d,
        F.avg_pool3d,
        F.adaptive_avg_pool1d,
        F.adaptive_avg_pool2d,
        F.adaptive_avg_pool3d,
        torch.mean,
    ],
    "add": [operator.add, operator.iadd, torch.add],
    "mul": [operator.mul, operator.imul, torch.mul],
    "cat": [torch.cat, torch.concat, torch.stack],
    "reshape": [
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
    ],
    "dropout": [F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout],
    "softmax": [F.softmax, torch.softmax, F.log_softmax, torch.log_softmax],
    "norm": [F.layer_norm, F.group_norm, F.instance_norm, F.local_response_norm, F.rms_norm],
    "matmul": [torch.matmul, operator.matmul, torch.bmm, torch.einsum],
}.items():
    for _fn in _fns:
        FUNCTION_KINDS[_fn] = _kind

try:  # torchvision's stochastic depth is the identity at explanation time
    from torchvision.ops import stochastic_depth

    FUNCTION_KINDS[stochastic_depth] = "dropout"
except ImportError:  # pragma: no cover - torchvision is a dependency
    pass

METHOD_KINDS: dict[str, str] = {
    **dict.fromkeys(["relu", "relu_"], "relu"),
    **dict.fromkeys(["sigmoid", "sigmoid_", "tanh", "tanh_"], "activation"),
    **dict.fromkeys(
        [
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
        ],
        "reshape",
    ),
    **dict.fromkeys(["add", "add_", "__add__", "__iadd__", "__radd__"], "add"),
    **dict.fromkeys(["mul", "mul_", "__mul__", "__rmul__"], "mul"),
    "mean": "avgpool",
    **dict.fromkeys(["softmax", "log_softmax"], "softmax"),
    **dict.fromkeys(["matmul", "bmm"], "matmul"),
}

#: In-place call forms and their out-of-place twins (replayed ops must never overwrite an activation).
INPLACE_FUNCTIONS: dict[Any, Any] = {
    operator.iadd: operator.add,
    operator.imul: operator.mul,
    operator.isub: operator.sub,
    operator.itruediv: operator.truediv,
    torch.relu_: torch.relu,
    F.relu_: F.relu,
}
INPLACE_METHODS: dict[str, str] = {
    "relu_": "relu",
    "add_": "add",
    "mul_": "mul",
    "sigmoid_": "sigmoid",
    "tanh_": "tanh",
    "clamp_": "clamp",
    "sub_": "sub",
    "div_": "div",
}


def module_kind(module: nn.Module) -> str:
    for types, kind in MODULE_KINDS:
        if isinstance(module, types):
            return kind
    return "other"


def node_kind(node: fx.Node, root: nn.Module) -> str:
    """The op kind of one call node (placeholders, get_attr and output are not ops)."""
    if node.op == "call_module":
        return module_kind(root.get_submodule(node.target))
    if node.op == "call_function":
        kind = FUNCTION_KINDS.get(node.target, "other")
        if node.target in (operator.truediv, torch.div) and not _is_node(node.args[1]):
            return "mul"  # division by a constant is a scaling
        return kind
    if node.op == "call_method":
        if node.target in ("div", "__truediv__") and len(node.args) > 1 and not _is_node(node.args[1]):
            return "mul"
        return METHOD_KINDS.get(node.target, "other")
    raise ValueError(f"node {node.name} ({node.op}) is not an op")


def _is_node(a: Any) -> bool:
    return isinstance(a, fx.Node)


def describe_target(node: fx.Node, root: nn.Module) -> str:
    """A readable target: `Conv2d features.0`, `torch.cat`, `Tensor.view`, `operator.add`."""
    if node.op == "call_module":
        return f"{type(root.get_submodule(node.target)).__name__} {node.target}"
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
        if s.startswith('File "') and "/torch/" not in s and "/torch\\" not in s:
            try:
                path = s.split('"')[1]
                lineno = int(s.split("line ")[1].split(",")[0])
            except (IndexError, ValueError):
                continue
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            best = f"{path.rsplit('/', 1)[-1]}:{lineno}: {code}"
    return best
