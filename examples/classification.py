"""Your own CNN, your own data, your own loop: fmprune.Pruner inside it, on one process or many.

    python examples/classification.py                        # one process
    torchrun --nproc_per_node 2 examples/classification.py   # DDP, any backend (gloo on CPUs)

The data are made here (blobs whose position and shape give the class) so the example runs
anywhere; put your DataLoader in their place. Every 40 iterations the pruner removes 4 maps,
until the model has 2x fewer MACs.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import fmprune


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def make_data(n: int, seed: int = 0) -> TensorDataset:
    """Class c: a bright square in quadrant c, plus noise (16x16 grey images)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = 0.3 * torch.randn(n, 1, 16, 16, generator=g)
    for i, c in enumerate(labels.tolist()):
        r, col = (c // 2) * 8 + 2, (c % 2) * 8 + 2
        images[i, 0, r:r + 4, col:col + 4] += 1.5
    return TensorDataset(images, labels)


def accuracy(model: nn.Module, data: TensorDataset) -> float:
    model.eval()
    with torch.no_grad():
        x, y = data.tensors
        right = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    return right


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--out", help="write the removed maps and sizes here as JSON")
    args = parser.parse_args()
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if distributed:
        dist.init_process_group("gloo")          # "nccl" on GPUs
    rank = dist.get_rank() if distributed else 0
    torch.manual_seed(0)                         # every rank builds the same model
    model = SmallCNN()
    train, test = make_data(4096, seed=1), make_data(1024, seed=2)
    sampler = DistributedSampler(train, shuffle=True, seed=0) if distributed else None
    loader = DataLoader(train, batch_size=64 // (dist.get_world_size() if distributed else 1),
                        sampler=sampler, shuffle=sampler is None, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruner = fmprune.Pruner(model, torch.zeros(1, 1, 16, 16), criterion="taylor", normalize="rms",
                            ignore=[model.head])
    net = DDP(model) if distributed else model
    removed_all, it, epoch = [], 0, 0
    while it < args.iterations:
        if sampler is not None:
            sampler.set_epoch(epoch)
        for images, labels in loader:
            loss = F.cross_entropy(net(images), labels)
            loss.backward()
            pruner.accumulate()
            optimizer.step()
            optimizer.zero_grad()
            it += 1
            if it % 40 == 0 and pruner.graph.total_macs() > 0.5 * pruner.base_macs:
                removed = pruner.step(maps=4, optimizer=optimizer)
                removed_all.append([(s.layer, s.original) for s in removed])
                if distributed:                  # the parameters are new tensors: wrap again
                    net = DDP(model)
            if it == args.iterations:
                break
        epoch += 1
    pruner.remove_hooks()
    if rank == 0:
        pruner.report()
        print(f"test accuracy {accuracy(model, test):.4f}")
    if args.out:                                 # one file per rank: they must agree
        with open(f"{args.out}.{rank}" if distributed else args.out, "w") as f:
            json.dump({"removed": removed_all, "macs": pruner.graph.total_macs(),
                       "weights": float(sum(p.double().sum() for p in model.parameters()))}, f)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
