"""Patterns the label flow once got wrong: a cat of a sequence node (a split, a slice or reversal of
chunks) crashed the tracer, and a map whose removal leaves a constant behind (a Linear over the
spatial axis adds its bias to a zeroed map) lost that constant. Each pattern is a small model;
random removals in every group must give exactly (float64) the model whose removed maps are
zeroed, or the maps are kept (pinned) or the model refused, never a crash."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fmprune
from graph_models import randomize_norms, zero_maps


class ChunkSliceCat(nn.Module):
    """``torch.cat(x.chunk(4, 1)[1:], 1)``: a selection of channels (chunk sizes are constants)."""

    def __init__(self) -> None:
        super().__init__()
        self.p, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(12)
        self.q, self.fc = nn.Conv2d(12, 6, 3, padding=1), nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu(self.bn(torch.cat(self.p(x).chunk(4, 1)[1:], 1)))
        return self.fc(F.relu(self.q(x)).mean((2, 3)))


class SplitCat(nn.Module):
    """``torch.cat(x.split(8, 1), 1)``: the split output itself is the cat's argument."""

    def __init__(self) -> None:
        super().__init__()
        self.p, self.q, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 6, 1), nn.Linear(6, 3)

    def forward(self, x):
        x = torch.cat(F.relu(self.p(x)).split(8, 1), 1)
        return self.fc(F.relu(self.q(x)).mean((2, 3)))


class ChunkReverseCat(nn.Module):
    """``torch.cat(x.chunk(2, 1)[::-1], 1)``: a permutation of channels."""

    def __init__(self) -> None:
        super().__init__()
        self.p, self.q, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 6, 1), nn.Linear(6 * 16, 3)

    def forward(self, x):
        x = torch.cat(F.relu(self.p(x)).chunk(2, 1)[::-1], 1)
        return self.fc(F.relu(self.q(x)).flatten(1))


class SpatialChunks(nn.Module):
    """Chunks of the height axis, reversed and joined along height, then side by side along
    channels: the same maps everywhere, so they stay prunable and each is read at two positions."""

    def __init__(self) -> None:
        super().__init__()
        self.p, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.q, self.fc = nn.Conv2d(16, 6, 3, padding=1), nn.Linear(6 * 2 * 4, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.p(x)))
        x = torch.cat(x.chunk(2, 2)[::-1], 2)
        x = torch.cat(x.chunk(2, 3), 1)
        return self.fc(F.relu(self.q(x)).flatten(1))


CASES = {
    "chunk_slice_cat": (ChunkSliceCat, {"q": 6}),
    "split_cat": (SplitCat, {"q": 6}),
    "chunk_reverse_cat": (ChunkReverseCat, {"q": 6}),
    "spatial_chunks": (SpatialChunks, {"p": 8, "q": 6}),
}


def assert_shrunk_equals_zeroed(model: nn.Module, x: torch.Tensor, rounds: int = 2, seed: int = 0) -> fmprune.Graph:
    """Remove random maps of every group for a few rounds; after each round the shrunk model must
    equal, in float64, a never-pruned copy whose removed maps are zeroed (``zero_maps``)."""
    model, x = randomize_norms(model, seed).double(), x.double()
    reference = copy.deepcopy(model)
    ref_graph = fmprune.trace(reference, x[:1])    # never pruned: its numbering is the original one
    graph = fmprune.trace(model, x[:1])
    rng = random.Random(seed)
    for round_ in range(rounds):
        for g in graph.groups:
            if g.size <= 1:
                continue
            drop = sorted(rng.sample(range(g.size), rng.randint(1, g.size - 1)))
            originals = [g.original[i] for i in drop]
            zero_maps(reference, ref_graph.positions(g.name, [ref_graph.alive(g.name).index(o) for o in originals]))
            graph.remove(g.name, drop)
        with torch.no_grad():
            out, ref = model(x), reference(x)
        diff = ((out - ref).abs().max() / ref.abs().max().clamp_min(1.0)).item()
        assert diff < 1e-9, f"round {round_}: shrunk and zeroed differ by {diff:.3g} (relative)"
    return graph


@pytest.mark.parametrize("case", list(CASES))
def test_cat_of_a_sequence_follows_the_labels(case):
    cls, sizes = CASES[case]
    torch.manual_seed(0)
    model = cls()
    x = torch.randn(3, 3, 4, 4)
    assert fmprune.trace(model, x[:1]).sizes() == sizes
    assert_shrunk_equals_zeroed(model, x)


def test_a_sequence_index_computed_at_run_time_is_refused():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.p, self.q = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.q(self.p(x).chunk(2, 1)[x.shape[0] - 1])
    with pytest.raises(fmprune.UnsupportedModelError, match="computed at run time"):
        fmprune.trace(Dynamic(), torch.zeros(1, 3, 4, 4))
