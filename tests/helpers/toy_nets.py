"""Small seeded nets (float64) for the reference-implementation tests: sequential and residual SpecNets."""

from __future__ import annotations

import torch

from tests.helpers.rule_reference import SpecNet, sequential

DTYPE = torch.float64


def _init(net: torch.nn.Module, seed: int, bias: bool = True) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g) if bias else torch.zeros_like(m.bias))
    return net.to(DTYPE).eval()


def cnn(seed: int = 0, bias: bool = True, classes: int = 5) -> SpecNet:
    """conv-relu-maxpool-conv-relu-avgpool-flatten-dense-relu-dense on 3x8x8 inputs."""
    net = sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(24, 12),
        torch.nn.ReLU(),
        torch.nn.Linear(12, classes),
    )
    return _init(net, seed, bias)


def mlp(seed: int = 0, bias: bool = True, sizes=(10, 16, 12, 6)) -> SpecNet:
    mods = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        mods += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return _init(sequential(torch.nn.Flatten(), *mods[:-1]), seed, bias)


def resnet(seed: int = 0, bias: bool = True, classes: int = 5) -> SpecNet:
    """A stem conv, two residual blocks (one with a 1x1 projection shortcut), global pooling and a dense head."""
    C = torch.nn.Conv2d
    spec = [
        ("stem", C(3, 4, 3, padding=1), ["in"]),
        ("stem_r", torch.nn.ReLU(), ["stem"]),
        ("a1", C(4, 4, 3, padding=1), ["stem_r"]),
        ("a1_r", torch.nn.ReLU(), ["a1"]),
        ("a2", C(4, 4, 3, padding=1), ["a1_r"]),
        ("a_add", "add", ["a2", "stem_r"]),
        ("a_r", torch.nn.ReLU(), ["a_add"]),
        ("pool", torch.nn.MaxPool2d(2), ["a_r"]),
        ("b1", C(4, 6, 3, padding=1), ["pool"]),
        ("b1_r", torch.nn.ReLU(), ["b1"]),
        ("b2", C(6, 6, 3, padding=1), ["b1_r"]),
        ("proj", C(4, 6, 1), ["pool"]),
        ("b_add", "add", ["b2", "proj"]),
        ("b_r", torch.nn.ReLU(), ["b_add"]),
        ("gap", torch.nn.AdaptiveAvgPool2d(1), ["b_r"]),
        ("flat", torch.nn.Flatten(), ["gap"]),
        ("fc", torch.nn.Linear(6, classes), ["flat"]),
    ]
    return _init(SpecNet(spec), seed, bias)


def inputs(n: int = 3, shape=(3, 8, 8), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 7)
    return torch.randn(n, *shape, generator=g, dtype=DTYPE)
