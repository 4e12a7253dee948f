"""Selection: the lowest-scoring maps across groups, never a group's last map; with ``round_to``,
in chunks that keep every group's size a multiple of it."""

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


def lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Flat indices of the ``count`` lowest scores, ties in index order (a stable sort): the one
    rule every ranking here breaks ties by (maps of one layer, single weights, a plan's maps)."""
    return torch.sort(scores.flatten(), stable=True).indices[:count]


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


def allowed_size(size: int, original: int, round_to: int) -> bool:
    """Whether a group of ``size`` maps is hardware-friendly: a multiple of ``round_to``, or its
    original size (a group smaller than ``round_to`` is never cut)."""
    return size == original or (size % round_to == 0 and size >= round_to)


def round_selection(ordered: list[Selected], sizes: dict[str, int], round_to: int, k: int) -> list[Selected]:
    """At least ``k`` maps of ``ordered`` (lowest scores first, at most every group's last but
    one) taken in whole chunks, so that every group's size stays a multiple of ``round_to`` (or
    its original size): when a group's next map comes up, the group's next lowest maps go with it
    down to the next allowed size. A chunk is kept together in the result (``trim_to_target``
    cuts only between chunks)."""
    if round_to == 1:
        return ordered[:k]
    by_group: dict[str, list[Selected]] = {}
    rank: dict[tuple[str, int], int] = {}   # a map's place in its group's order
    for s in ordered:
        rank[s.layer, s.original] = len(by_group.setdefault(s.layer, []))
        by_group[s.layer].append(s)
    taken = {n: 0 for n in by_group}
    chosen: list[Selected] = []
    for s in ordered:
        if len(chosen) >= k:
            break
        g = s.layer
        now = sizes[g] - taken[g]
        if rank[g, s.original] < taken[g]:
            continue   # already taken with an earlier chunk
        target = (now - 1) // round_to * round_to
        need = now - target
        if target < round_to or taken[g] + need > len(by_group[g]):
            continue   # the group is at its smallest allowed size
        chosen += by_group[g][taken[g]:taken[g] + need]
        taken[g] += need
    return chosen
