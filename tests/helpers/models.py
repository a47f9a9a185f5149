"""Small hand-written models for compiler tests: functional ops, in-place adds, concatenation, slicing and a
module called twice (the two failures of hook-based explainers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rulelang.testing.models import randomize_


class FunctionalNet(nn.Module):
    """Uses only functional ops, `+=`, torch.cat, slicing, x.view and one ReLU module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(16, 6, 1)
        self.relu = nn.ReLU(inplace=True)  # called twice
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.conv1(x))
        b = self.bn(self.conv2(a))
        b += a  # in-place add on an activation
        b = self.relu(b)  # the same module again
        c = torch.cat([b, F.relu(a) * 0.5], dim=1)
        c = F.max_pool2d(c, 2)
        c = self.conv3(c)[:, :, 1:-1, 1:-1]  # slicing
        c = torch.relu(c) + c.relu()
        c = F.adaptive_avg_pool2d(c, 4)
        return self.fc(c.view(c.size(0), -1))


class SmallCNN(nn.Sequential):
    """conv-relu-pool x2, dense-relu-dense (a miniature VGG)."""

    def __init__(self, channels: int = 3, classes: int = 4) -> None:
        super().__init__(
            nn.Conv2d(channels, 6, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 16),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(16, classes),
        )


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and biases, so that folding them is actually tested."""
    return randomize_(model, seed)
