"""Building blocks shared by the zoo's residual families, and the weight initialisation they use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FmpruneError

SHORTCUTS = ("A", "B")


class PadShortcut(nn.Module):
    """He et al.'s option A: subsample by ``stride`` and append zero channels; no parameters, so
    the block's output channels beyond the input's are fed by the residual branch alone."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, 0, self.extra))


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Option B: a strided 1x1 convolution and BatchNorm matching the residual's shape."""
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with a shortcut; the shortcut changes shape only when the block
    changes resolution or width, then by option ``shortcut`` ("A" zero padding, "B" projection)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise FmpruneError(f"unknown shortcut {shortcut!r} (use A: zero-padded identity, B: 1x1 projection)")
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        if stride == 1 and in_planes == planes:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_planes, planes, stride)
        else:
            self.shortcut = projection(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


def basic_stage(in_planes: int, planes: int, blocks: int, stride: int, shortcut: str) -> nn.Sequential:
    """``blocks`` basic blocks, the first one changing resolution by ``stride``."""
    layers = [BasicBlock(in_planes, planes, stride, shortcut)]
    layers += [BasicBlock(planes, planes, 1, shortcut) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def init_conv_bn(model: nn.Module) -> None:
    """He (fan-out) initialisation for convolutions, BN as identity: the usual recipe for
    training these networks from scratch; Linear layers keep PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
