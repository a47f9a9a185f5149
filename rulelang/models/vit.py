"""A small vision transformer for the 3×32×32 RGB digits (``rulelang.builtin_data("digits-rgb")``).

The built-in ``digits-vit`` (trained by ``examples/train_digits_vit.py``): 4×4 patches (one token per pixel of
the original 8×8 digit), a token standardisation (``InstanceNorm1d``: each embedding channel centred and scaled
over the image's patch tokens, which removes the digits' random per-image colours; without it the ViT stays at
chance for hundreds of steps), a class token, learned position embeddings, pre-norm blocks with LayerNorm,
multi-head self-attention through ``F.scaled_dot_product_attention`` and a GELU MLP, a final LayerNorm and a linear
head on the class token. Written with plain modules and functional calls so that torch.fx traces it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DigitsViT", "SelfAttention", "ViTBlock"]


class SelfAttention(nn.Module):
    """Multi-head self-attention: one `qkv` projection, scaled dot-product attention, an output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, T, 3*D) -> (3, N, heads, T, D/heads)
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).flatten(2))


class ViTBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DigitsViT(nn.Module):
    """ViT for 3×32×32 inputs: patch 4 (64 tokens + a class token), `depth` blocks of width `dim`."""

    def __init__(
        self,
        dim: int = 64,
        depth: int = 3,
        heads: int = 4,
        mlp: int = 128,
        patch: int = 4,
        image: int = 32,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        tokens = (image // patch) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.token_norm = nn.InstanceNorm1d(dim, affine=True)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_norm(self.patch_embed(x).flatten(2)).transpose(1, 2)  # (N, tokens, dim)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])
