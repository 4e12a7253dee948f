"""Selection: the lowest-scoring maps across groups, never a group's last map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..criteria import Scores


@dataclass(frozen=True)
class Selected:
    layer: str
    index: int        # current index in the (already shrunk) layer
    original: int     # index in the unpruned model's numbering
    score: float


def select_minimum(final: Scores, alive: dict[str, Sequence[int]], k: int) -> list[Selected]:
    """The ``k`` lowest-scoring maps across layers (ties: layer order, then map order), never a
    layer's last map. ``final[l][j]`` scores the map whose original index is ``alive[l][j]``."""
    names = list(final)
    flat = torch.cat([final[n].to(torch.float64) for n in names])
    owner = torch.cat([torch.full((len(final[n]),), li) for li, n in enumerate(names)])
    pos = torch.cat([torch.arange(len(final[n])) for n in names])
    order = torch.sort(flat, stable=True).indices.tolist()
    left = {n: len(final[n]) for n in names}
    chosen: list[Selected] = []
    for j in order:
        if len(chosen) == k:
            break
        name = names[int(owner[j])]
        if left[name] <= 1:
            continue
        left[name] -= 1
        idx = int(pos[j])
        chosen.append(Selected(name, idx, int(alive[name][idx]), float(flat[j])))
    return chosen
