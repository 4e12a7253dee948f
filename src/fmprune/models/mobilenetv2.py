"""MobileNetV2 (Sandler et al. 2018) in its CIFAR form: the stem and the first 24-map stage keep
stride 1, so a 32x32 image reaches the last stage at 4x4 (total stride 8 instead of 32).
Inverted residual blocks as in the paper: 1x1 expansion, 3x3 depthwise, linear 1x1 projection,
with the identity shortcut only where a block keeps resolution and width."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import init_conv_bn

# (expansion t, output maps c, blocks n, first stride s); the paper's table with s=1 for the
# stem and for the 24-map stage.
CIFAR_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of ``divisor`` without losing more than 10 %."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_planes * expansion
        self.expands = expansion != 1
        if self.expands:
            self.conv1 = nn.Conv2d(in_planes, hidden, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(hidden)
            self.relu1 = nn.ReLU6()
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.relu2 = nn.ReLU6()
        self.conv3 = nn.Conv2d(hidden, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.residual = stride == 1 and in_planes == out_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x))) if self.expands else x
        out = self.bn3(self.conv3(self.relu2(self.bn2(self.conv2(out)))))
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> None:
        super().__init__()
        planes = make_divisible(32 * width_mult)
        self.last_planes = make_divisible(1280 * max(1.0, width_mult))
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU6()
        blocks = []
        for t, c, n, s in CIFAR_SETTINGS:
            out = make_divisible(c * width_mult)
            for i in range(n):
                blocks.append(InvertedResidual(planes, out, s if i == 0 else 1, t))
                planes = out
        self.blocks = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(planes, self.last_planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(self.last_planes)
        self.relu2 = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(self.last_planes, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(self.blocks(x))))
        return self.fc(self.flatten(self.pool(x)))


def mobilenetv2(num_classes: int = 10, in_channels: int = 3, **kwargs) -> MobileNetV2:
    """MobileNetV2, CIFAR variant (stride 8 overall; 2.24 M parameters at width 1)."""
    return MobileNetV2(num_classes, in_channels, **kwargs)
