"""A two-headed model (classification + regression) with a summed loss, pruned inside the user's
own loop with fmprune.Pruner; the two heads' layers stay whole (ignore=...).

    python examples/two_heads.py

The data are made here: a blob's quadrant is the class, its brightness the regression target.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import fmprune


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 24, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(24, 48, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                  nn.Flatten())
        self.classify = nn.Sequential(nn.Linear(192, 64), nn.ReLU(), nn.Linear(64, 4))
        self.regress = nn.Linear(192, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.classify(h), self.regress(h)          # N x 4 logits, N x 1 values


def batch(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, 4, (n,), generator=g)
    brightness = torch.rand(n, generator=g) + 0.5
    x = 0.2 * torch.randn(n, 1, 16, 16, generator=g)
    for i, c in enumerate(labels.tolist()):
        r, col = (c // 2) * 8 + 2, (c % 2) * 8 + 2
        x[i, 0, r:r + 4, col:col + 4] += brightness[i]
    return x, labels, brightness


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=600)
    args = parser.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = TwoHeads()
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    pruner = fmprune.Pruner(model, torch.zeros(1, 1, 16, 16), criterion="taylor", normalize="rms",
                            ignore=[model.classify[2], model.regress])      # the heads' outputs stay
    for it in range(1, args.iterations + 1):
        x, labels, brightness = batch(64, g)
        logits, value = model(x)
        loss = F.cross_entropy(logits, labels) + F.mse_loss(value[:, 0], brightness)   # any loss
        loss.backward()
        pruner.accumulate()
        optimizer.step()
        optimizer.zero_grad()
        if it >= args.iterations // 3 and it % 50 == 0 and pruner.graph.total_macs() > 0.4 * pruner.base_macs:
            removed = pruner.step(fraction=0.15, optimizer=optimizer)
            print(f"iteration {it}: removed {len(removed)} maps, MACs {pruner.graph.total_macs():,}")
    pruner.remove_hooks()
    pruner.report()
    model.eval()
    with torch.no_grad():
        x, labels, brightness = batch(1000, torch.Generator().manual_seed(2))
        logits, value = model(x)
    print(f"accuracy {(logits.argmax(1) == labels).float().mean():.4f}, "
          f"regression RMSE {F.mse_loss(value[:, 0], brightness).sqrt():.4f}")


if __name__ == "__main__":
    main()
