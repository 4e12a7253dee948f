"""Models whose channels move: permute/transpose to channels-last and back (ConvNeXt's blocks),
a view splitting the channel axis and a transpose shuffling it (ShuffleNet's channel shuffle), a
per-channel scale of the model (ConvNeXt's layer_scale), LayerNorm over the channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """torchvision's LayerNorm2d, as ConvNeXt's downsampling and head use it (normalises axis 1);
    fmprune knows torchvision's class by name, this one is registered in the test below."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ChannelsLast(nn.Module):
    """ConvNeXt's block: depthwise conv, permute to NHWC, LayerNorm, Linear up, GELU, Linear down,
    permute back, a per-channel layer scale, a residual add; a LayerNorm2d and a head."""

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        self.stem, self.norm0 = nn.Conv2d(3, dim, 2, stride=2), LayerNorm2d(dim)
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.up, self.down = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-6))
        self.head_norm, self.fc = LayerNorm2d(dim), nn.Linear(dim, 3)

    def forward(self, x):
        x = self.norm0(self.stem(x))
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.down(F.gelu(self.up(self.norm(y)))).permute(0, 3, 1, 2)
        x = x + self.layer_scale * y
        return self.fc(torch.flatten(self.head_norm(F.adaptive_avg_pool2d(x, 1)), 1))


class TransposedTokens(nn.Module):
    """Channels moved with transpose(1, 3) and reshaped to tokens (N, H·W, C), a Linear over them,
    back to (N, C, H, W) with a transpose and a reshape; and a scale of shape (C,) added
    channels-last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.mix = nn.Linear(8, 5)
        self.offset = nn.Parameter(torch.zeros(5))
        self.out, self.fc = nn.Conv2d(5, 4, 1), nn.Linear(4, 2)

    def forward(self, x):
        n, _, h, w = x.shape
        t = F.relu(self.bn(self.conv(x))).flatten(2).transpose(1, 2)    # (N, HW, C)
        t = torch.relu(self.mix(t)) * self.offset
        y = t.transpose(1, 2).reshape(n, -1, h, w)
        return self.fc(F.relu(self.out(y)).mean((2, 3)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's: view (B, g, C/g, H, W), swap the two, view back."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, c, h, w)


class Shuffle(nn.Module):
    """Two convs concatenated, shuffled in 2 groups, a conv and a flatten into Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c, self.fc = nn.Conv2d(8, 5, 1), nn.Linear(5 * 16, 3)

    def forward(self, x):
        x = channel_shuffle(torch.cat([self.a(x), F.relu(self.b(x))], 1), 2)
        x = F.relu(self.dw(F.relu(self.bn(x))))
        return self.fc(F.relu(self.c(x)).flatten(1))


class ShuffleFixed(Shuffle):
    """The same shuffle with the group size written as a constant: its maps are kept."""

    def forward(self, x):
        x = torch.cat([self.a(x), F.relu(self.b(x))], 1)
        x = x.view(x.shape[0], 2, 4, 4, 4).transpose(1, 2).reshape(x.shape[0], 8, 4, 4)
        x = F.relu(self.dw(F.relu(self.bn(x))))
        return self.fc(F.relu(self.c(x)).flatten(1))


CASES = {   # model, group sizes
    "channels_last": (ChannelsLast, {"stem": 6, "up": 24}),
    "transposed_tokens": (TransposedTokens, {"conv": 8, "mix": 5, "out": 4}),
    # a's map i and b's map i meet in one column of the (2, 4) view: one map of two channels
    "shuffle": (Shuffle, {"a": 4, "c": 5}),
    "shuffle_fixed_size": (ShuffleFixed, {"c": 5}),
}
