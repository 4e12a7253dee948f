"""The pruner under ``torch.distributed`` (DDP, any backend): every rank must remove the same maps.

Each rank sees different batches, so each holds different statistics. Before selection the
statistics are gathered (every rank gets all ranks' per-example values, in rank order), so the
scores, and therefore the decisions, are those of one process that saw all the global batches.
A rank whose model differs (another seed, an earlier removal missed) is refused before anything
changes. After a removal the parameters are new tensors: rebuild the DDP wrapper (see
docs/library.md).
"""

from __future__ import annotations

import hashlib
import json

import torch
import torch.distributed as dist

from ..errors import FmpruneError


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _device() -> torch.device:
    """Where collectives run: the current CUDA device for NCCL, the CPU otherwise."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_ranks_agree(sizes: dict[str, int], examples: int, reads_data: bool) -> None:
    """Refuse, on every rank at once (no rank left waiting in a collective), ranks whose models
    differ in their groups or sizes (compared by a digest), or a rank with no statistics."""
    digest = hashlib.sha256(json.dumps(sizes, sort_keys=True).encode()).digest()[:8]
    mine = torch.tensor([int.from_bytes(digest, "little") & ((1 << 62) - 1), examples], dtype=torch.long,
                        device=_device())
    every = [torch.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(every, mine)
    if any(int(t[0]) != int(mine[0]) for t in every):
        raise FmpruneError("the ranks disagree on the model (different groups or maps left): every rank must "
                           "build the same model and apply the same removals")
    if reads_data and any(int(t[1]) == 0 for t in every):
        raise FmpruneError("a rank has no statistics: every rank must run forward, loss.backward() and "
                           "pruner.accumulate() before step()")


def gather_rows(value: torch.Tensor) -> torch.Tensor:
    """All ranks' rows of ``value`` (N_r × ...), concatenated in rank order, on every rank."""
    device = _device()
    local = value.to(device)
    count = torch.tensor([len(local)], dtype=torch.long, device=device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    most = max(int(c) for c in counts)
    padded = torch.zeros((most, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[:len(local)] = local
    parts = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(c)] for p, c in zip(parts, counts)]).to(value.device)


def gather_taps(taps) -> None:
    """Replace every tap's statistics by all ranks' (the same order of taps on every rank)."""
    for (layer, where), tap in sorted(taps.taps.items()):
        for what in ("grad_dots", "activations"):
            parts = getattr(tap, what)
            if not (tap.want_grad if what == "grad_dots" else tap.want_activation):
                continue
            taps.set_stacked(layer, where, what, gather_rows(torch.cat(parts)))
