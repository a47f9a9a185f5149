"""Hypothesis strategies for small random traceable models (for property tests of rules and of the compiler).

A model is a random chain of blocks over a C×H×W feature map: conv (module or functional), BatchNorm, ReLU
(module, functional, method or in-place), max/avg pooling, a residual add (`+` or `+=`), a channel cat of two
branches, and a head with flatten/view/mean and one or two dense layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

BLOCKS = ("conv", "fconv", "bn", "relu", "frelu", "mrelu", "maxpool", "avgpool", "residual", "inplace_residual", "cat")


@dataclass(frozen=True)
class ModelSpec:
    """What a random model is made of: readable in hypothesis' counterexamples."""

    channels: int
    size: int
    blocks: tuple[str, ...]
    head: str
    classes: int
    seed: int


class RandomNet(nn.Module):
    """Built from a `ModelSpec`; every block kind uses a different call form on purpose."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        torch.manual_seed(spec.seed)
        self.spec = spec
        c, s = spec.channels, spec.size
        self.layers = nn.ModuleList()
        self.plan: list[tuple[str, int]] = []
        for kind in spec.blocks:
            if kind in ("conv", "fconv", "residual", "inplace_residual"):
                self.layers.append(nn.Conv2d(c, c, 3, padding=1))
            elif kind == "bn":
                self.layers.append(nn.BatchNorm2d(c))
            elif kind == "cat":
                self.layers.append(nn.Conv2d(c, c, 1))
            elif kind == "relu":
                self.layers.append(nn.ReLU())
            else:
                self.layers.append(nn.Identity())
            if kind in ("maxpool", "avgpool"):
                if s < 2:
                    kind = "identity"  # nothing left to pool (decided here: forward has no data-dependent branch)
                else:
                    s //= 2
            if kind == "cat":
                c *= 2
                self.layers.append(nn.Conv2d(c, c // 2, 1))
                c //= 2
            self.plan.append((kind, len(self.layers) - 1))
        self.flat = c * s * s
        self.fc1 = nn.Linear(self.flat if spec.head != "mean" else c, 8)
        self.fc2 = nn.Linear(8, spec.classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                with torch.no_grad():
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for kind, k in self.plan:
            layer = self.layers[k]
            if kind in ("conv", "bn", "relu"):
                x = layer(x)
            elif kind == "fconv":
                x = F.conv2d(x, layer.weight, layer.bias, padding=1)
            elif kind == "frelu":
                x = F.relu(x)
            elif kind == "mrelu":
                x = x.relu()
            elif kind == "maxpool":
                x = F.max_pool2d(x, 2)
            elif kind == "avgpool":
                x = F.avg_pool2d(x, 2)
            elif kind == "residual":
                x = x + torch.relu(layer(x))
            elif kind == "inplace_residual":
                y = layer(x)
                y += x  # in place on the conv output (autograd allows it there)
                x = torch.relu(y)
            elif kind == "cat":
                a = self.layers[k - 1](x)
                x = layer(torch.cat([x, torch.relu(a)], dim=1))
        if self.spec.head == "mean":
            x = x.mean((2, 3))
        elif self.spec.head == "view":
            x = x.view(x.size(0), -1)
        else:
            x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


@st.composite
def model_specs(draw: st.DrawFn, max_blocks: int = 6) -> ModelSpec:
    return ModelSpec(
        channels=draw(st.integers(1, 4)),
        size=draw(st.sampled_from([4, 6, 8])),
        blocks=tuple(draw(st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=max_blocks))),
        head=draw(st.sampled_from(["flatten", "view", "mean"])),
        classes=draw(st.integers(2, 5)),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def models_and_inputs(
    draw: st.DrawFn, batch: int = 3, dtype: torch.dtype = torch.float64, max_blocks: int = 6
) -> tuple[RandomNet, torch.Tensor]:
    """(eval-mode RandomNet, input batch) pairs."""
    spec = draw(model_specs(max_blocks=max_blocks))
    model = RandomNet(spec).to(dtype).eval()
    g = torch.Generator().manual_seed(spec.seed + 1)
    x = torch.randn(batch, spec.channels, spec.size, spec.size, generator=g, dtype=dtype)
    return model, x
