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
from support.graph_models import randomize_norms, zero_maps
from support.reference import assert_shrunk_equals_zeroed


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


def groups_then_exact(factory, sizes: dict[str, int], **rounds) -> None:
    """The model ``factory`` builds traces into groups of ``sizes`` and prunes exactly."""
    torch.manual_seed(0)
    model = factory()
    x = torch.randn(3, 3, 4, 4)
    assert fmprune.trace(model, x[:1]).sizes() == sizes
    assert_shrunk_equals_zeroed(model, x, **rounds)


@pytest.mark.parametrize("case", list(CASES))
def test_cat_of_a_sequence_follows_the_labels(case):
    groups_then_exact(*CASES[case])


def test_a_sequence_index_computed_at_run_time_is_refused():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.p, self.q = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.q(self.p(x).chunk(2, 1)[x.shape[0] - 1])
    with pytest.raises(fmprune.UnsupportedModelError, match="computed at run time"):
        fmprune.trace(Dynamic(), torch.zeros(1, 3, 4, 4))


class SpatialLinear(nn.Module):
    """conv -> reshape(B, C, -1) -> a Linear over the spatial axis -> flatten -> fc: the spatial
    Linear adds its bias to a zeroed map, a constant that fc must still receive."""

    def __init__(self, fc_bias: bool = True) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.spatial, self.fc = nn.Linear(16, 5), nn.Linear(8 * 5, 3, bias=fc_bias)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.spatial(x.reshape(x.shape[0], x.shape[1], -1))
        return self.fc(F.relu(x).flatten(1))


class Offsets(nn.Module):
    """Ops that turn a zero map into a constant (sigmoid, ``x + 1``) before a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.p, self.q = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(6 * 16 + 4, 3)

    def forward(self, x):
        a = torch.sigmoid(self.p(x)).flatten(1)
        b = (F.relu(self.q(x)) + 1).mean((2, 3))
        return self.fc(torch.cat([a, b], 1))


class ResidueIntoConv(nn.Module):
    """A constant (sigmoid) and data (a channel-broadcast map added) reach convs: a conv with
    padding cannot fold either, so those maps are kept; the gated and the plain maps prune."""

    def __init__(self) -> None:
        super().__init__()
        self.p, self.one = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 1, 1)
        self.r, self.s = nn.Conv2d(3, 5, 3, padding=1), nn.Conv2d(3, 7, 3, padding=1)
        self.q = nn.Conv2d(6 + 5 + 7, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        a = torch.sigmoid(self.p(x))
        b = F.relu(self.r(x)) + self.one(x)
        c = F.relu(self.s(x)) * torch.sigmoid(self.one(x))
        return self.fc(F.relu(self.q(torch.cat([a, b, c], 1))).mean((2, 3)))


RESIDUE_CASES = {
    "spatial_linear": (SpatialLinear, {"conv": 8}),
    "spatial_linear_fc_without_bias": (lambda: SpatialLinear(fc_bias=False), {}),
    "offsets": (Offsets, {"p": 6, "q": 4}),
    "residue_into_conv": (ResidueIntoConv, {"one": 1, "s": 7, "q": 4}),
}


@pytest.mark.parametrize("case", list(RESIDUE_CASES))
def test_a_constant_left_by_a_removed_map_is_folded_or_its_maps_kept(case):
    groups_then_exact(*RESIDUE_CASES[case], rounds=3)


def test_the_constant_folded_is_the_one_the_model_computes_at_removal():
    """The spatial Linear's bias changes after tracing (retraining): removal folds today's."""
    torch.manual_seed(0)
    model, x = randomize_norms(SpatialLinear()), torch.randn(3, 3, 4, 4)
    graph = fmprune.trace(model, x[:1])
    model, x = model.double(), x.double()   # the example inputs stay float32
    with torch.no_grad():
        model.spatial.bias.add_(torch.randn(5, dtype=torch.float64))
    reference = copy.deepcopy(model)
    zero_maps(reference, graph.positions("conv", [1, 4]))
    graph.remove("conv", [1, 4])
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() < 1e-12


class RandomNet(nn.Module):
    """A small random model from a grammar of the supported ops, interpreted step by step (fx
    unrolls the loop): each step reads the running tensor ``x`` with ``c`` channels."""

    STEPS = ("conv", "depthwise", "residual", "cat", "chunk_reverse", "split", "slice", "se_gate",
             "pool", "sigmoid", "spatial_linear")

    def __init__(self, seed: int) -> None:
        super().__init__()
        rng = random.Random(seed)
        self.plan: list[str] = []
        self.layers = nn.ModuleDict()
        c, size = 3, 8
        self._add("conv", nn.Conv2d(c, 6, 3, padding=1), nn.BatchNorm2d(6))
        c = 6
        for i in range(rng.randint(2, 5)):
            step = rng.choice(self.STEPS)
            c, size = self._step(f"s{i}", step, c, size, rng)
        head = rng.choice(("flatten", "mean"))
        features = c * size * size if head == "flatten" else c
        self.plan.append(head)
        self.head = nn.Sequential(nn.Linear(features, 7), nn.ReLU(), nn.Linear(7, 3))

    def _add(self, name: str, *modules: nn.Module) -> None:
        self.plan.append(name)
        self.layers[f"l{len(self.plan) - 1}"] = nn.Sequential(*modules)

    def _step(self, name: str, step: str, c: int, size: int, rng: random.Random) -> tuple[int, int]:
        """Append one step; returns the channels and spatial size after it."""
        out = rng.randint(3, 8)
        if step == "conv":
            self._add(step, nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU())
            return out, size
        if step == "depthwise":
            m = rng.choice((1, 2))
            self._add(step, nn.Conv2d(c, c * m, 3, padding=1, groups=c), nn.BatchNorm2d(c * m), nn.ReLU6())
            return c * m, size
        if step == "residual":
            self._add(step, nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
            return c, size
        if step == "cat":
            self._add(step, nn.Conv2d(c, out, 1))
            return c + out, size
        if step == "chunk_reverse" and c % 2 == 0:
            self._add(step)
            return c, size
        if step == "split" and c >= 2:
            self._add(step, nn.Conv2d(c - c // 2, out, 1))   # convolves the second piece
            return c // 2 + out, size
        if step == "slice" and c >= 3:
            self._add(step)
            return c - 1, size
        if step == "se_gate":
            self._add(step, nn.Conv2d(c, 2, 1), nn.ReLU(), nn.Conv2d(2, c, 1), nn.Sigmoid())
            return c, size
        if step == "pool" and size >= 2:
            self._add(step)
            return c, size // 2
        if step == "sigmoid":
            self._add(step, nn.Sigmoid())
            return c, size
        if step == "spatial_linear":
            self._add(step, nn.Linear(size * size, size * size))
            return c, size
        return self._step(name, "conv", c, size, rng)

    def forward(self, x):
        for i, step in enumerate(self.plan[:-1]):
            layer = self.layers[f"l{i}"]
            if step in ("conv", "depthwise", "sigmoid"):
                x = layer(x)
            elif step == "residual":
                x = F.relu(x + layer(x))
            elif step == "cat":
                x = torch.cat([x, layer(x)], 1)
            elif step == "chunk_reverse":
                x = torch.cat(x.chunk(2, 1)[::-1], 1)
            elif step == "split":
                a, b = x.split([x.shape[1] // 2, x.shape[1] - x.shape[1] // 2], 1)
                x = torch.cat([a, layer(b)], 1)
            elif step == "slice":
                x = x[:, 1:]
            elif step == "se_gate":
                x = x * layer(F.adaptive_avg_pool2d(x, 1))
            elif step == "pool":
                x = F.max_pool2d(x, 2)
            elif step == "spatial_linear":
                x = layer(x.flatten(2)).reshape(x.shape)
        x = x.flatten(1) if self.plan[-1] == "flatten" else x.mean((2, 3))
        return self.head(x)


@pytest.mark.parametrize("seed", range(30))
def test_random_models_prune_exactly_or_are_refused(seed):
    """Whatever the combination: shrunk == zeroed, or a clean UnsupportedModelError, nothing else."""
    torch.manual_seed(seed)
    model = RandomNet(seed)
    try:
        assert_shrunk_equals_zeroed(model, torch.randn(2, 3, 8, 8), seed=seed)
    except fmprune.UnsupportedModelError:
        pass
