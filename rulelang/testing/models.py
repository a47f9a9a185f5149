"""Seeded random models for tests and benchmarks: torchvision's default init plus random biases and BatchNorm
statistics, so that bias handling and BatchNorm folding are exercised and logits are not all near zero."""

from __future__ import annotations

import torch
from torch import nn


def randomize_(model: nn.Module, seed: int = 0, bias: bool = True) -> nn.Module:
    """In place: biases ~ 0.1·N(0,1); BatchNorm gamma ~ U(0.5, 1.5), beta ~ 0.1·N, mean ~ 0.1·N, var ~ U(0.5, 1.5).

    With `bias=False` BatchNorm's beta and running mean are set to zero (a folded BatchNorm adds no bias).
    """
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n = m.num_features
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(n, generator=g))
                    m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))  # type: ignore[union-attr]
                if not bias:
                    m.running_mean.zero_()
                    if m.affine:
                        m.bias.zero_()
    return model
