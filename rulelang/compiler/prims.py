"""Leaf functions the explaining graph calls: rule-language primitives that need run-time shapes or autograd.

Each is a plain function of tensors, so the generated code reads `stab(z, 1e-06)` and torch.compile can
trace it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

import torch

_STAB_FAST = (torch.float32, torch.float64)


def stab(z: Any, eps: Any) -> Any:
    """z + eps * sign(z) with sign(0) = +1."""
    if not isinstance(z, torch.Tensor):
        return z + eps if z >= 0 else z - eps
    # sign(z) * eps as (z >= 0) * 2 eps - eps, exactly +-eps (2 eps is an exact doubling), then z + that: bit-identical
    # to z + eps * where(z >= 0, 1, -1), without torch.where (on this CPU build `where` costs ~200x an add:
    # 10.8 ms vs 0.05 ms for 0.5 M floats, benchmarks/RESULTS.md)
    if isinstance(eps, float) and (eps == 0 or 1.2e-38 < eps < 1e30) and z.dtype in _STAB_FAST:
        # the same +-eps without the bool -> float conversion (2.5-3x faster here): sign(z) * 2 eps + eps is
        # -eps, eps or 3 eps (for z < 0, z = +-0, z > 0), clamped to [-eps, eps]; NaN stays NaN. Bit-identical
        # while eps and 2 eps are normal float32 numbers (doubling exact), hence the bounds and dtypes
        return z + torch.sign(z).mul_(2 * eps).add_(eps).clamp_(-eps, eps)
    return z + ((z >= 0).to(z.dtype) * (2 * eps) - eps)


def _below(k: float, dtype: torch.dtype) -> float | None:
    """The largest `dtype` value below `k` as `dtype` rounds it (`t <= _below(k)` is `t < k` in `dtype`), for a
    positive `k` in float32/float64; None otherwise. Plain Python (no tensor), so torch.compile folds it."""
    if dtype == torch.float64:
        return math.nextafter(k, -math.inf)
    if dtype != torch.float32:
        return None
    (bits,) = struct.unpack("<I", struct.pack("<f", k))  # k rounded to float32, as the comparison rounds it
    if bits == 0 or bits >= 0x7F800000:  # 0 or inf after rounding
        return None
    (below,) = struct.unpack("<f", struct.pack("<I", bits - 1))
    return below


def select_below(t: Any, k: float, a: Any, b: Any) -> Any:
    """`where(t < k, a, b)` for `t >= 0` (or NaN) and a constant `k > 0`, in three fast kernels instead of a select.

    For float32/float64 tensors of one shape (else `torch.where`). `hardtanh_backward(a, t, -1, k)` keeps `a` where `-1 < t < k` (all of `t < k`, as t >= 0) and is exactly 0
    elsewhere; `threshold_backward(b, t, below(k))` keeps `b` where `t >= k` and is exactly 0 elsewhere, whatever
    the discarded values (inf, NaN); their sum is the select (`v + 0 == v`). Where `t` is NaN both are kept: the
    lowering uses this only where `b` is then NaN too (see `evaluate.Scope.lower_where`). On this CPU build `torch.where`
    costs 8-100x an add (`benchmarks/kernels.py`); both kernels here cost about one add each.
    """
    if not (
        isinstance(t, torch.Tensor)
        and isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and t.dtype == a.dtype == b.dtype
        and t.shape == a.shape == b.shape
        and (below := _below(float(k), t.dtype)) is not None
    ):
        return torch.where(t < k, a, b)
    keep_a = torch.ops.aten.hardtanh_backward(a, t, -1.0, k)
    keep_b = torch.ops.aten.threshold_backward(b, t, below)
    return keep_a + keep_b


def relu_vjp(s: Any, out: torch.Tensor) -> Any:
    """The vjp of a ReLU from its output: `s` where the output is positive, else 0.

    `relu(x) > 0` exactly when `x > 0`, so the pre-activation need not be kept alive; one kernel
    (`threshold_backward`, what autograd runs) when `s` matches the output's shape and dtype.
    """
    if isinstance(s, torch.Tensor) and s.shape == out.shape and s.dtype == out.dtype:
        return torch.ops.aten.threshold_backward(s, out, 0)
    return torch.where(out > 0, s, 0.0)


def sum_all(*values: Any) -> Any:
    """The sum of relevance contributions: one fresh buffer, the rest added in place (no temporaries).

    Same order of additions as `((a + b) + c) + ...`, so bit-identical to the chain of out-of-place adds.
    """
    total = values[0] + values[1]
    for v in values[2:]:
        if (
            isinstance(total, torch.Tensor)
            and isinstance(v, torch.Tensor)
            and torch.broadcast_shapes(total.shape, v.shape) == total.shape
            and torch.result_type(total, v) == total.dtype
        ):
            total.add_(v)
        else:
            total = total + v
    return total


def cat_vjp(s: torch.Tensor, dim: int, start: int, length: int) -> torch.Tensor:
    """The vjp of `torch.cat` w.r.t. one input: the slice of `s` that input filled."""
    return s.narrow(dim, start, length)


def one_hot(y: torch.Tensor, target: Any) -> torch.Tensor:
    """One-hot of the explained class per sample, shaped like `y` (N, K, ...); target None = argmax."""
    n, k = y.shape[0], y.shape[1]
    if target is None:
        idx = y.reshape(n, k, -1).sum(-1).argmax(1)
    elif isinstance(target, int):
        idx = torch.full((n,), target, dtype=torch.long, device=y.device)
    else:
        idx = torch.as_tensor(target, device=y.device).long().reshape(-1)
        if idx.numel() == 1 and n != 1:
            idx = idx.expand(n)
    if idx.shape[0] != n:
        raise ValueError(f"target has {idx.shape[0]} entries for a batch of {n}")
    if idx.device.type != "meta" and bool(((idx < 0) | (idx >= k)).any()):
        raise ValueError(f"target class out of range: the model has {k} outputs")
    shape = (n, k) + (1,) * (y.dim() - 2)
    return (
        torch.zeros((n, k), dtype=y.dtype, device=y.device).scatter_(1, idx[:, None], 1.0).reshape(shape).expand_as(y)
    )


def _batch_dims(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, t.dim()))


def per_sample_sum(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=_batch_dims(t), keepdim=True) if t.dim() > 1 else t


def per_sample_mean(t: torch.Tensor) -> torch.Tensor:
    return t.mean(dim=_batch_dims(t), keepdim=True) if t.dim() > 1 else t


def per_sample_max(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).amax(1).reshape((-1,) + (1,) * (t.dim() - 1))


def per_sample_min(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).amin(1).reshape((-1,) + (1,) * (t.dim() - 1))


def percentile(t: torch.Tensor, q: Any) -> torch.Tensor:
    """The q-th percentile (0..100) of each sample's entries, broadcasting back (linear interpolation)."""
    flat = t.flatten(1)
    qs = torch.as_tensor(float(q) / 100.0, dtype=flat.dtype, device=flat.device)
    return torch.quantile(flat, qs, dim=1).reshape((-1,) + (1,) * (t.dim() - 1))


def channel_param(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-channel parameter vector broadcast over dim 1 of `like` (N, C, ...)."""
    if value.dim() == 0:
        return value.to(like.dtype)
    return value.to(like.dtype).reshape((1, -1) + (1,) * (like.dim() - 2))


def bn_scale(weight: Any, var: torch.Tensor, eps: float) -> torch.Tensor:
    """gamma / sqrt(var + eps) of an eval-mode BatchNorm (gamma = 1 without affine)."""
    s = torch.rsqrt(var + eps)
    return s * weight if weight is not None else s


def fold_weight(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Scales the output channels (dim 0) of a conv/linear weight."""
    return w * scale.reshape((-1,) + (1,) * (w.dim() - 1))


def fold_bias(b: Any, mean: torch.Tensor, scale: torch.Tensor, beta: Any) -> torch.Tensor:
    out = ((b if b is not None else 0.0) - mean) * scale
    return out + beta if beta is not None else out


def affine(t: torch.Tensor, w: Any, b: Any) -> torch.Tensor:
    """Per-channel scale and shift over dim 1 (an unfolded BatchNorm)."""
    out = t * channel_param(w, t) if isinstance(w, torch.Tensor) else t * w
    if isinstance(b, torch.Tensor):
        return out + channel_param(b, t)
    return out + b if b else out


def conv_vjp(
    s: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    stride: Sequence[int],
    padding: Any,
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """Vector-Jacobian product of a convolution w.r.t. its input (the transposed convolution)."""
    if isinstance(padding, str):  # 'same' / 'valid': explicit per-dim padding
        padding = (
            [0] * (w.dim() - 2) if padding == "valid" else [d * (k - 1) // 2 for d, k in zip(dilation, w.shape[2:])]
        )
    s = s.to(w.dtype)
    return torch.ops.aten.convolution_backward(
        s,
        x,
        w,
        None,
        list(stride),
        list(padding),
        list(dilation),
        False,
        [0] * (w.dim() - 2),
        groups,
        [True, False, False],
    )[0]


def sum_to(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Undoes broadcasting: sums `s` down to the shape of `like`."""
    if s.shape == like.shape:
        return s
    while s.dim() > like.dim():
        s = s.sum(0)
    dims = tuple(i for i, (a, b) in enumerate(zip(s.shape, like.shape)) if b == 1 and a != 1)
    return s.sum(dims, keepdim=True) if dims else s


class VjpOf:
    """The vector-Jacobian product of one model op, by torch.func over a replay of its original call.

    Called as `vjp_<node>(s, *argument_values)`; returns the cotangents of the activation arguments.
    """

    def __init__(self, name: str, fn: Callable[..., Any], positions: Sequence[int]) -> None:
        self.__name__ = f"vjp_{name}"
        self.__qualname__ = self.__name__
        self.__module__ = "rulelang"
        self.fn = fn
        self.positions = tuple(positions)

    def __call__(self, s: torch.Tensor, *values: Any) -> tuple:
        return generic_vjp(self.fn, self.positions, s, *values)


def generic_vjp(fn: Callable[..., Any], positions: Sequence[int], s: torch.Tensor, *values: Any) -> tuple:
    """The vjp of `fn(*values)` w.r.t. the values at `positions` (torch.func; works under no_grad)."""

    def f(*acts: torch.Tensor) -> torch.Tensor:
        full = list(values)
        for p, a in zip(positions, acts):
            full[p] = a
        return fn(*full)

    primals = [values[p] for p in positions]
    with torch.enable_grad():
        pullback = torch.func.vjp(f, *primals)[1]
        return pullback(s.to(primals[0].dtype) if primals[0].is_floating_point() else s)


def reference_input(x: torch.Tensor, reference: Any, kind: str) -> torch.Tensor:
    """The reference input x0 of `reference:` rules: zeros, the caller's tensor, or a blurred copy of x."""
    if kind == "zeros":
        # one reference sample shared by the batch: the reference pass runs on batch 1 and broadcasts
        return (
            torch.zeros((1,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
            if reference is None
            else _shared(reference, x)
        )
    if kind == "input":
        if reference is None:
            raise ValueError("this rule needs a reference input: call explainer(x, target, reference=x0)")
        return _shared(reference, x)
    if kind == "blur":
        if reference is not None:
            return reference.to(x.dtype).expand_as(x)
        c = x.shape[1]
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device)
        k2 = (k[:, None] * k[None, :]) / 256.0
        out = x
        for _ in range(4):
            out = torch.nn.functional.conv2d(out, k2.expand(c, 1, 5, 5), padding=2, groups=c)
        return out
    raise ValueError(f"unknown reference kind {kind!r}")


def _shared(reference: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A caller's reference as one sample (batch 1, broadcast by the rules) when it is one, else per sample."""
    r = reference.to(x.dtype)
    if r.dim() == x.dim() - 1:
        r = r.unsqueeze(0)
    if r.dim() == x.dim() and r.shape[0] == 1 and tuple(r.shape[1:]) == tuple(x.shape[1:]):
        return r
    return r.expand_as(x)


def pair(v: Any) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def max_pool2d_indices(
    x: torch.Tensor, kernel: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-pooling that also returns its switches (for a direct vjp)."""
    return torch.nn.functional.max_pool2d(
        x, kernel, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True
    )


def max_pool2d_vjp(
    s: torch.Tensor,
    x: torch.Tensor,
    indices: torch.Tensor,
    kernel: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: bool,
) -> torch.Tensor:
    """Routes `s` through the max-pool switches."""
    return torch.ops.aten.max_pool2d_with_indices_backward(
        s.to(x.dtype), x, pair(kernel), pair(stride), pair(padding), pair(dilation), ceil_mode, indices
    )


def adaptive_avg_pool2d_vjp(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten._adaptive_avg_pool2d_backward(s.to(x.dtype).contiguous(), x)


def avg_pool2d_vjp(
    s: torch.Tensor,
    x: torch.Tensor,
    kernel: Any,
    stride: Any,
    padding: Any,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: Any,
) -> torch.Tensor:
    return torch.ops.aten.avg_pool2d_backward(
        s.to(x.dtype), x, pair(kernel), pair(stride), pair(padding), ceil_mode, count_include_pad, divisor_override
    )


def norm_frozen_vjp(s: torch.Tensor, x: torch.Tensor, mode: str, arg: int, weight: Any, eps: Any) -> torch.Tensor:
    """The vjp of a normalisation with its scale (1/std or 1/rms, from the forward input `x`) held constant.

    `mode` "layer": layer norm over the last `arg` dims, `(x - mean) / std * weight + bias`, held linear as
    `center(t) / std * weight` (the mean subtraction stays a linear map); "group": group norm with `arg` groups
    over dim 1 (instance norm: one group per channel); "rms": RMS norm over the last `arg` dims (no centring).
    """
    s = s.to(x.dtype)
    if mode == "group":
        n, c = x.shape[:2]
        g = s if weight is None else s * weight.reshape((1, c) + (1,) * (x.dim() - 2))
        xg = x.reshape(n, arg, -1)
        scale = torch.rsqrt(xg.var(-1, unbiased=False, keepdim=True) + eps)
        gg = g.reshape(n, arg, -1) * scale
        return (gg - gg.mean(-1, keepdim=True)).reshape(x.shape)
    dims = tuple(range(x.dim() - arg, x.dim()))
    g = s if weight is None else s * weight
    if mode == "rms":
        eps = torch.finfo(x.dtype).eps if eps is None else eps
        return g * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps)
    g = g * torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + eps)
    return g - g.mean(dims, keepdim=True)
