"""The built-in networks for the 3×32×32 RGB digits (``rulelang.builtin_data("digits-rgb")``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_input

__all__ = ["DigitsCNN", "DigitsResNet", "DigitsVGG16", "BasicBlock"]


class DigitsCNN(nn.Module):
    """VGG-style: 6 conv (3×3, 'same') + 2 dense, ReLU, 3 max-poolings (32 → 16 → 8 → 4).

    Deeper than the paper's CIFAR-10 net (4 conv + 2 dense) in the same pattern: pairs of convs, then a
    2×2 max-pool; flatten; dropout; dense; ReLU; dropout; dense to 10 logits (no softmax).
    Module names follow torchvision's VGG: ``features.*`` and ``classifier.*``.
    """

    def __init__(
        self,
        widths: tuple[int, int, int] = (16, 32, 64),
        hidden: int = 128,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [
                nn.Conv2d(c, w, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(w, w, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c = w
        self.features = nn.Sequential(*layers)
        side = 32 // 2 ** len(widths)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():  # torchvision VGG's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)  # type: ignore[arg-type]
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x)
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block with BatchNorm and a *functional* skip: ``F.relu(out + identity)``."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + identity
        return F.relu(out)


class DigitsResNet(nn.Module):
    """Small ResNet: conv-BN-ReLU stem, 3 stages of 2 basic blocks (16, 32, 64 channels; strides 1, 2, 2),
    global average pooling, one dense layer to 10 logits. Skips are functional adds, ReLUs are ``F.relu``."""

    def __init__(
        self, widths: tuple[int, int, int] = (16, 32, 64), blocks: int = 2, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        c = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(c, w, stride)] + [BasicBlock(w, w) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            c = w
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():  # torchvision ResNet's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


#: VGG-16's configuration "D": 13 convs in 5 blocks, "M" = 2×2 max-pool
VGG16_LAYOUT = (1, 1, "M", 2, 2, "M", 3, 3, 3, "M", 4, 4, 4, "M", 5, 5, 5, "M")


class DigitsVGG16(nn.Module):
    """VGG-16's layout (13 conv 3×3 'same' + ReLU in 5 blocks, each closed by a 2×2 max-pool; then 3 dense
    layers), BatchNorm-free like the original, with channels scaled down by 4 (16, 32, 64, 128, 128 instead of
    64 … 512) and the dense layers by 16 (256 instead of 4096) so it trains on a CPU. 32 → 1 pixel after the 5th
    pool, so the classifier sees 128 features (torchvision's adaptive 7×7 average pool is dropped).
    Module names follow torchvision's VGG (``features.*``, ``classifier.*``).
    """

    def __init__(
        self,
        widths: tuple[int, int, int, int, int] = (16, 32, 64, 128, 128),
        hidden: int = 256,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for item in VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                w = widths[int(item) - 1]
                layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU()]
                c = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        # Kaiming-normal (fan-in) for every conv and hidden dense layer keeps the signal's scale through 15 ReLU
        # layers without BatchNorm (torchvision's N(0, 0.01) dense init leaves this depth stuck at chance);
        # the last layer starts small, zero biases.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)  # type: ignore[arg-type]
        nn.init.normal_(self.classifier[-1].weight, 0, 0.01)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x)
        return self.classifier(self.features(x))
