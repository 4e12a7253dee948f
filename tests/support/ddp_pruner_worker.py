"""Run by tests/pruner/test_pruner_distributed.py: the same pruning on the same global batches, either in
one process or split over the ranks of a torchrun/gloo group (each rank gets its half of every
batch). Writes the removed maps and a weight checksum per rank to OUT[.rank]."""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import fmprune


def main(out: str, mismatch: bool = False) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(12, 5))
    if mismatch and rank == 1:
        nn.init.zeros_(model[0].weight)            # not the point: a model of another size
        fmprune.trace(model, torch.zeros(1, 3, 8, 8)).remove("0", [0])
    model.eval()                                   # BatchNorm statistics need no syncing here
    # SGD on the summed loss: DDP averages the ranks' gradients (a 1/world of the full sum), so
    # the single process takes a learning rate 1/world as large
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005 * world)
    pruner = fmprune.Pruner(model, torch.zeros(1, 3, 8, 8))
    wrap = world > 1 and not mismatch             # DDP itself refuses ranks with other shapes
    net = DDP(model) if wrap else model
    g = torch.Generator().manual_seed(1)
    removed = []
    try:
        for it in range(6):
            x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g)
            if world > 1:
                x, y = x.chunk(world)[rank], y.chunk(world)[rank]
            F.cross_entropy(net(x), y, reduction="sum").backward()
            pruner.accumulate()
            optimizer.step()
            optimizer.zero_grad()
            if it % 2 == 1:
                removed.append([(s.layer, s.original) for s in pruner.step(maps=3, optimizer=optimizer)])
                if wrap:
                    net = DDP(model)
        result = {"removed": removed, "weights": [p.detach().double().sum().item() for p in model.parameters()]}
    except fmprune.FmpruneError as e:
        result = {"error": str(e)}
    with open(f"{out}.{rank}" if world > 1 else out, "w") as f:
        json.dump(result, f)
    if world > 1:
        # both ranks have written their result before either tears the group down: a rank that
        # closes its gloo connections while the other is still in its own teardown can make that
        # one abort (seen once, rank 1 exit -6, on a loaded machine)
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], mismatch="--mismatch" in sys.argv)
