"""Attention traced as its parts: the tracer writes fused attention calls as the matmuls and softmax they compute.

Rules such as AttnLRP and CP-LRP (rules/attn-lrp.yaml, rules/cp-lrp.yaml) need the bilinear products Q·Kᵀ and
A·V and the softmax between them as separate ops; a fused call would be one opaque node. `DecomposingTracer`
therefore writes

- ``F.scaled_dot_product_attention(q, k, v, attn_mask)`` as ``softmax((q * scale) @ kᵀ + mask) @ v``;
- ``nn.MultiheadAttention`` as its input projections (``F.linear`` on slices of ``in_proj_weight``), the heads'
  attention as above, and the ``out_proj`` module;
- ``nn.TransformerEncoder`` as its layers in turn, and ``nn.TransformerEncoderLayer`` by its own (slow-path)
  forward with PyTorch's fused fast path switched off while tracing (``torch.backends.mha``), so that
  ``torch._transformer_encoder_layer_fwd`` never hides the ops from the tracer. The user's model is not changed.

The decomposed graph computes the same function as the fused call (equal up to floating-point rounding), so the
gradient rule still equals autograd. Masks must be constants (buffers or None): a mask that depends on the model
input would make the mask itself an activation. Boolean masks become an additive bias of the dtype's most negative
finite value (not -inf, so that ``x * (...)`` rules stay finite at masked scores). Not supported (a CompileError
says so): ``is_causal=True``, grouped-query attention (``enable_gqa``), ``add_bias_kv`` and ``add_zero_attn``.
Pass ``leaf_modules=[nn.MultiheadAttention]`` to keep a module call whole (gradient-type rules only).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CompileError

#: torch.nn modules that are traced through (fx keeps torch.nn modules whole by default).
COMPOSITE_MODULES: tuple[type, ...] = (nn.MultiheadAttention, nn.TransformerEncoder, nn.TransformerEncoderLayer)


@contextlib.contextmanager
def mha_fastpath_disabled() -> Iterator[None]:
    """Switches PyTorch's fused transformer fast path off (and back to its previous setting afterwards)."""
    backend = torch.backends.mha
    old = backend.get_fastpath_enabled()
    backend.set_fastpath_enabled(False)
    try:
        yield
    finally:
        backend.set_fastpath_enabled(old)


class DecomposingTracer(fx.Tracer):
    """An fx tracer that writes attention as matmul / softmax / matmul (see the module docstring)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, COMPOSITE_MODULES) and not self.keep_whole(m, qualname):
            return False
        return super().is_leaf_module(m, qualname)

    def keep_whole(self, m: nn.Module, qualname: str) -> bool:
        """Whether the user asked for `m` to stay one op (subclasses override with their leaf settings)."""
        return False

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if isinstance(m, COMPOSITE_MODULES) and not self.is_leaf_module(m, self.path_of_module(m)):
            if isinstance(m, nn.MultiheadAttention):
                forward = _bind(multi_head_attention, m, self)
            elif isinstance(m, nn.TransformerEncoder):
                forward = _bind(transformer_encoder, m, self)
            else:
                forward = _without_fastpath(forward)
        return super().call_module(m, forward, args, kwargs)

    def create_proxy(self, kind: str, target: Any, args: tuple, kwargs: dict, *rest: Any, **more: Any) -> fx.Proxy:
        if kind == "call_function" and target is F.scaled_dot_product_attention:
            return scaled_dot_product_attention(*args, **kwargs)
        return super().create_proxy(kind, target, args, kwargs, *rest, **more)

    def param(self, m: nn.Module, name: str) -> Any:
        """A get_attr proxy of a parameter of `m` (slices of it stay reads of the live parameter)."""
        return self.create_proxy("get_attr", f"{self.path_of_module(m)}.{name}".lstrip("."), (), {})


def _bind(fn: Callable[..., Any], m: nn.Module, tracer: DecomposingTracer) -> Callable[..., Any]:
    return lambda *args, **kwargs: fn(m, tracer, *args, **kwargs)


def _without_fastpath(forward: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        with mha_fastpath_disabled():
            return forward(*args, **kwargs)

    return run


def mask_bias(mask: torch.Tensor, dtype: torch.dtype, true_masks: bool) -> torch.Tensor:
    """An additive attention bias: a float mask as it is; a boolean one as 0 / the dtype's most negative finite
    value (`true_masks`: True marks masked positions, as nn.MultiheadAttention's masks; else True marks allowed
    positions, as F.scaled_dot_product_attention's)."""
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    masked = mask if true_masks else ~mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(masked, torch.finfo(dtype).min)


def _bias(mask: Any, like: Any, true_masks: bool) -> Any:
    """`mask_bias` of a mask, as a graph call when the mask is traced (a buffer), else now."""
    if mask is None:
        return None
    if isinstance(mask, fx.Proxy):
        dtype = like.dtype  # a proxy: read at run time by the graph
        return mask.tracer.create_proxy("call_function", mask_bias, (mask, dtype, true_masks), {})
    return mask_bias(mask, torch.get_default_dtype(), true_masks)


def scaled_dot_product_attention(
    query: Any,
    key: Any,
    value: Any,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Any:
    """``softmax((q * scale) @ kᵀ + mask) @ v`` (dropout off: explanations run in eval mode)."""
    if is_causal is not False or enable_gqa is not False:
        what = "is_causal=True" if is_causal is not False else "enable_gqa=True"
        raise CompileError(
            f"F.scaled_dot_product_attention with {what} is not decomposed by rulelang: pass the causal mask "
            "explicitly as attn_mask (a buffer), or repeat the key/value heads yourself"
        )
    if scale is None:
        scale = query.size(-1) ** -0.5
    attn = torch.matmul(query * scale, key.transpose(-2, -1))
    bias = _bias(attn_mask, attn, true_masks=False)
    if bias is not None:
        attn = attn + bias
    return torch.matmul(torch.softmax(attn, dim=-1), value)


def multi_head_attention(
    mha: nn.MultiheadAttention,
    tracer: DecomposingTracer,
    query: Any,
    key: Any,
    value: Any,
    key_padding_mask: Any = None,
    need_weights: bool = True,
    attn_mask: Any = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[Any, Any]:
    """nn.MultiheadAttention (batched inputs) as projections, per-head attention and the output projection."""
    if mha.bias_k is not None or mha.add_zero_attn:
        raise CompileError("nn.MultiheadAttention with add_bias_kv or add_zero_attn is not decomposed by rulelang")
    if is_causal is not False and attn_mask is None:
        raise CompileError("nn.MultiheadAttention with is_causal=True needs its attn_mask (a buffer) to be passed")
    e, h = mha.embed_dim, mha.num_heads
    self_attention = query is key and key is value
    if not mha.batch_first:  # (L, N, E) -> (N, L, E)
        query = query.transpose(0, 1)
        key = query if self_attention else key.transpose(0, 1)
        value = query if self_attention else value.transpose(0, 1)
    bias = tracer.param(mha, "in_proj_bias") if mha.in_proj_bias is not None else None
    if mha._qkv_same_embed_dim and self_attention:
        qkv = F.linear(query, mha.in_proj_weight, mha.in_proj_bias).unflatten(-1, (3, e))
        q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
    else:
        ws: tuple[Any, ...]
        if mha._qkv_same_embed_dim:
            w = tracer.param(mha, "in_proj_weight")
            ws = (w[:e], w[e : 2 * e], w[2 * e :])
        else:
            ws = tuple(tracer.param(mha, f"{c}_proj_weight") for c in "qkv")
        bs = (bias[:e], bias[e : 2 * e], bias[2 * e :]) if bias is not None else (None, None, None)
        q, k, v = (F.linear(t, w_, b_) for t, w_, b_ in zip((query, key, value), ws, bs))
    heads = [t.unflatten(-1, (h, e // h)).transpose(1, 2) for t in (q, k, v)]  # (N, H, L, E/H)
    attn = torch.matmul(heads[0] * float((e // h) ** -0.5), heads[1].transpose(-2, -1))  # (N, H, L, S)
    mask = _bias(attn_mask, attn, true_masks=True)
    if mask is not None:
        # (L, S) broadcasts; (N*H, L, S) -> (N, H, L, S)
        attn = attn + (mask.reshape(attn.shape) if _dims(attn_mask) == 3 else mask)
    padding = _bias(key_padding_mask, attn, true_masks=True)
    if padding is not None:
        attn = attn + padding[:, None, None, :]  # (N, S)
    attn = torch.softmax(attn, dim=-1)
    out = torch.matmul(attn, heads[2]).transpose(1, 2).flatten(2)  # (N, L, E)
    out = mha.out_proj(out)
    if not mha.batch_first:
        out = out.transpose(0, 1)
    if not need_weights:
        return out, None
    return out, (attn.mean(1) if average_attn_weights else attn)


def _dims(mask: Any) -> int:
    if isinstance(mask, fx.Proxy):  # a buffer: its tensor is on the traced root
        node = mask.node
        if node.op == "get_attr":
            root: nn.Module = getattr(mask.tracer, "root")  # noqa: B009  (fx.Tracer sets it while tracing)
            return root.get_buffer(str(node.target)).dim()
        raise CompileError("nn.MultiheadAttention's attn_mask must be a buffer or a constant tensor")
    return mask.dim()


def transformer_encoder(
    enc: nn.TransformerEncoder,
    tracer: DecomposingTracer,
    src: Any,
    mask: Any = None,
    src_key_padding_mask: Any = None,
    is_causal: bool | None = None,
) -> Any:
    """nn.TransformerEncoder's slow path: its layers in turn, then its final norm."""
    out = src
    for layer in enc.layers:
        out = layer(out, src_mask=mask, is_causal=bool(is_causal), src_key_padding_mask=src_key_padding_mask)
    if enc.norm is not None:
        out = enc.norm(out)
    return out
