"""A small U-Net (skip concatenations) trained for segmentation with a per-pixel loss, then pruned
to 2x fewer MACs with fmprune.prune: your loss, your metric, fmprune's loop.

    python examples/segmentation.py [--run-dir runs/unet]

The data are made here: bright squares (class 1) and crosses (class 2) on noise; the metric is
the mean intersection-over-union over the three classes on held-out images.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fmprune


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Two levels down, two up; the decoder concatenates the encoder's maps (skip connections)."""

    def __init__(self, classes: int = 3, width: int = 16) -> None:
        super().__init__()
        self.enc1, self.enc2 = block(1, width), block(width, 2 * width)
        self.bottom = block(2 * width, 4 * width)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = block(4 * width, 2 * width)
        self.up1 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec1 = block(2 * width, width)
        self.out = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.out(d1)


def make_data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    images = 0.4 * torch.randn(n, 1, 32, 32, generator=g)
    masks = torch.zeros(n, 32, 32, dtype=torch.long)
    for i in range(n):
        for cls in (1, 2):
            r, c = torch.randint(2, 22, (2,), generator=g).tolist()
            if cls == 1:
                images[i, 0, r:r + 8, c:c + 8] += 1.0
                masks[i, r:r + 8, c:c + 8] = 1
            else:
                images[i, 0, r + 3:r + 5, c:c + 8] += 1.0
                images[i, 0, r:r + 8, c + 3:c + 5] += 1.0
                masks[i, r + 3:r + 5, c:c + 8] = 2
                masks[i, r:r + 8, c + 3:c + 5] = 2
    return TensorDataset(images, masks)


def mean_iou(model: nn.Module, data: TensorDataset, classes: int = 3) -> float:
    model.eval()
    with torch.no_grad():
        x, y = data.tensors
        pred = model(x).argmax(1)
    model.train()
    ious = [((pred == c) & (y == c)).sum() / ((pred == c) | (y == c)).sum().clamp_min(1) for c in range(classes)]
    return float(torch.stack(ious).mean())


def pixel_loss(model: nn.Module, batch) -> torch.Tensor:
    images, masks = batch
    return F.cross_entropy(model(images), masks)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-iterations", type=int, default=300)
    parser.add_argument("--retrain-steps", type=int, default=20, help="updates after each pruning step")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--save", default=None, help="save the pruned model here, then load it back")
    args = parser.parse_args()
    torch.manual_seed(0)
    train, val = make_data(512, seed=1), make_data(128, seed=2)
    loader = DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = UNet()
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    it = 0
    while it < args.train_iterations:          # the user's training, before pruning
        for batch in loader:
            optimizer.zero_grad()
            pixel_loss(model, batch).backward()
            optimizer.step()
            it += 1
            if it == args.train_iterations:
                break
    print(f"trained U-Net: mean IoU {mean_iou(model, val):.4f}")
    result = fmprune.prune(model, torch.zeros(1, 1, 32, 32), loader, pixel_loss, lambda m: mean_iou(m, val),
                           criterion="taylor", normalize="rms", target_macs=0.5, maps_per_step=0.1,
                           retrain_steps=args.retrain_steps, calibration_batches=4, run_dir=args.run_dir,
                           optimizer_fn=lambda params: torch.optim.Adam(params, 1e-3))
    print(f"pruned: {result.steps} steps, MACs x{result.mac_reduction:.2f} fewer, params x{result.compression:.2f} "
          f"fewer, mean IoU {result.base_metric:.4f} -> {result.final_metric:.4f}")
    if args.save:
        fmprune.save(model, args.save)
        loaded = fmprune.load(UNet, args.save)
        print(f"loaded back from {args.save}: mean IoU {mean_iou(loaded, val):.4f}")


if __name__ == "__main__":
    main()
