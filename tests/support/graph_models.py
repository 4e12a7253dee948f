"""Small hand-built models, one per coupling pattern the dependency graph must handle, and the
zeroed-model reference: a removed map must behave exactly like a map whose producers are zero."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class ResidualBN(nn.Module):
    """Stem conv+BN, two residual blocks whose adds tie stem and block outputs, a projection block."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.a1, self.b1 = nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.a2, self.b2 = nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c1, self.d1 = nn.Conv2d(8, 5, 3, padding=1), nn.BatchNorm2d(5)
        self.c2, self.d2 = nn.Conv2d(5, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.down = nn.Conv2d(8, 12, 1, stride=2)
        self.e1 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu(x + self.b2(self.a2(F.relu(self.b1(self.a1(x))))))
        x = F.relu(x + self.d2(self.c2(F.relu(self.d1(self.c1(x))))))
        x = F.relu(self.down(x) + self.e1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Concat(nn.Module):
    """Two branches concatenated along channels, then a conv and a flatten into Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.p, self.q = nn.Conv2d(3, 5, 3, padding=1), nn.Conv2d(3, 7, 1)
        self.bn = nn.BatchNorm2d(12)
        self.r = nn.Conv2d(12, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        y = torch.cat([self.p(x), self.q(x)], dim=1)
        y = F.max_pool2d(F.relu(self.r(F.relu(self.bn(y)))), 2)
        return self.fc(y.flatten(1))


class Split(nn.Module):
    """A producer split at fixed sizes (its maps are kept: the sizes are constants of the code),
    consumers of the pieces, a slice that keeps all channels and one that cuts."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Conv2d(3, 10, 3, padding=1)
        self.u, self.v = nn.Conv2d(4, 5, 1), nn.Conv2d(6, 5, 1)
        self.w = nn.Conv2d(5, 3, 1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        a, b = torch.split(F.relu(self.p(x)), [4, 6], dim=1)
        y = self.u(a) + self.v(b)
        y = self.w(F.relu(y))[:, 0:3]
        return self.fc(y.mean((2, 3))) + self.u(a)[:, 1:3].mean((1, 2, 3))[:, None]


class Depthwise(nn.Module):
    """MobileNetV2-style inverted residual: expand, depthwise (multiplier 1 and 2), project."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.expand, self.bn1 = nn.Conv2d(6, 12, 1, bias=False), nn.BatchNorm2d(12)
        self.dw, self.bn2 = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False), nn.BatchNorm2d(12)
        self.project, self.bn3 = nn.Conv2d(12, 6, 1, bias=False), nn.BatchNorm2d(6)
        self.dw2 = nn.Conv2d(6, 12, 3, padding=1, groups=6)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        x = F.relu6(self.bn0(self.stem(x)))
        y = F.relu6(self.bn1(self.expand(x)))
        y = F.relu6(self.bn2(self.dw(y)))
        x = x + self.bn3(self.project(y))
        x = F.relu(self.dw2(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class SqueezeExcite(nn.Module):
    """A channel gate multiplied back into its producer's output (couples gate conv and producer)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Conv2d(3, 8, 3, padding=1)
        self.squeeze, self.excite = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.q = nn.Conv2d(8, 5, 3, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        x = F.relu(self.p(x))
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(F.adaptive_avg_pool2d(x, 1)))))
        x = F.relu(self.q(x * gate))
        return self.fc(x.mean((2, 3)))


class TransposeChain(nn.Module):
    """Encoder conv, ConvTranspose decoder, a 1x1 head: producers and consumers of both kinds."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dec = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.head(F.relu(self.dec(F.relu(self.bn(self.enc(x))))))


class FlattenMLP(nn.Module):
    """Conv into a flatten into a Linear chain with dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc1, self.fc2, self.fc3 = nn.Linear(4 * 8 * 8, 16), nn.Linear(16, 12), nn.Linear(12, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2).view(x.size(0), -1)
        x = self.drop(F.relu(self.fc1(x)))
        return self.fc3(F.relu(self.fc2(x)))


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm with non-trivial statistics and affine parameters, so zeroing is a real test."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


@torch.no_grad()
def zero_maps(model: nn.Module, positions: dict[str, dict[str, list[int]]]) -> None:
    """Set to zero the output positions of every layer of a group (producers and BatchNorm)."""
    modules = dict(model.named_modules())
    for name, roles in positions.items():
        out = roles["out"]
        if not out:
            continue
        m = modules[name]
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            m.weight[:, out] = 0
        elif hasattr(m, "weight") and m.weight is not None and m.weight.dim() > 0:
            m.weight[out] = 0
        if getattr(m, "bias", None) is not None:
            m.bias[out] = 0


def zeroed_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).eval()


# model, input shape, group sizes: the hand-built models' exact groups
CASES = {
    "residual": (ResidualBN, (3, 8, 8), {"stem": 8, "a1": 6, "c1": 5, "down": 12}),
    "concat": (Concat, (3, 8, 8), {"p": 5, "q": 7, "r": 6}),
    "split": (Split, (3, 8, 8), {"w": 3}),
    "depthwise": (Depthwise, (3, 8, 8), {"stem": 6, "expand": 12}),
    "se_gate": (SqueezeExcite, (3, 8, 8), {"p": 8, "squeeze": 4, "q": 5}),
    "conv_transpose": (TransposeChain, (3, 8, 8), {"enc": 8, "dec": 6}),
    "flatten": (FlattenMLP, (1, 16, 16), {"conv": 4, "fc1": 16, "fc2": 12}),
}
