"""``fmprune prune --distributed``: the run's retraining under DistributedDataParallel.

Launched by ``torchrun --nproc_per_node N -m fmprune prune --distributed ...`` (any backend: gloo
on CPUs, nccl on GPUs). Every rank holds the same checkpoint and data, so scoring on the
calibration images and evaluation give every rank the same numbers and the same decisions
without any exchange; only retraining is split: each rank takes its share of every minibatch
and DDP averages the gradients, so the ranks' models stay identical and one update is the one a
single process would make on the whole minibatch. Rank 0 writes the run directory; rank r keeps
its own resume state in ``RUN_DIR/.rank<r>`` (identical content), so a killed run resumes on every
rank. Multi-node: torchrun's rendezvous (``--nnodes``, ``--rdzv-endpoint``) changes nothing here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import FmpruneError


def start(device: str) -> tuple[int, int, str]:
    """Join the process group torchrun set up: (rank, world size, this rank's device)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise FmpruneError("--distributed runs under torchrun: torchrun --nproc_per_node N -m fmprune prune "
                           "--distributed ...")
    cuda = device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return dist.get_rank(), dist.get_world_size(), device


def rank_dir(run_dir: Path, rank: int) -> Path:
    """Where rank ``rank`` keeps its run directory: the run directory itself for rank 0."""
    return run_dir if rank == 0 else run_dir / f".rank{rank}"


class ShardedStream:
    """A batch stream of which this rank takes its share of every minibatch (same order everywhere)."""

    def __init__(self, stream, rank: int, world: int) -> None:
        self.stream, self.rank, self.world = stream, rank, world

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = next(self.stream)
        return x.chunk(self.world)[self.rank], y.chunk(self.world)[self.rank]

    def state(self) -> dict:
        return self.stream.state()

    def restore(self, state: dict) -> None:
        self.stream.restore(state)


def data_parallel(model: nn.Module) -> nn.Module:
    """``model`` wrapped for one retraining (built anew after every removal: surgery makes new
    parameter tensors)."""
    if not (dist.is_available() and dist.is_initialized()):
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
