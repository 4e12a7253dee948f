"""The second way in: a model torch.fx cannot trace (Python control flow on a shape) is recorded
from one forward pass; the recording gives the same groups, notes and refusals as torch.fx
where both work, prunes exactly, keeps the maps whose count a Python decision reads, and a model
neither can trace is refused in one line naming both failures."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fmprune
from fmprune.graph import capture
from fmprune.layers import LayerNormAdapter
from support import graph_models, layout_models
from support.reference import assert_shrunk_equals_zeroed
from support.transformer_models import AttentionWeightsUsed, SmallViT

RECORDED = "traced by recording one forward pass"


class PadToEven(nn.Module):
    """Pads an odd feature map to an even size before a stride-2 conv: ``if`` on a spatial size."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn = nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6)
        self.b, self.fc = nn.Conv2d(6, 8, 3, stride=2), nn.Linear(8, 4)

    def forward(self, x):
        y = F.relu(self.bn(self.a(x)))
        if y.shape[-1] % 2:
            y = F.pad(y, (0, 1, 0, 1))
        return self.fc(F.relu(self.b(y)).mean((2, 3)))


class SquareTokens(nn.Module):
    """Tokens back to a square grid with a side computed in Python (``int(math.sqrt(...))``), as
    vision transformers' heads often do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.mix, self.fc = nn.Conv2d(3, 8, 2, stride=2), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        tokens = F.gelu(self.mix(self.embed(x).flatten(2).transpose(1, 2)))   # (N, L, 8)
        side = int(math.sqrt(tokens.shape[1]))
        grid = tokens.transpose(1, 2).reshape(x.shape[0], -1, side, side)
        return self.fc(grid.mean((2, 3)))


class CountsChannels(PadToEven):
    """A branch on a channel count: removing one of a's maps would change it."""

    def forward(self, x):
        y = F.relu(self.bn(self.a(x)))
        if y.shape[1] > 4:
            y = y * 2
        return self.fc(F.relu(self.b(y)).mean((2, 3)))


class OnValues(PadToEven):
    """A branch on tensor values: another input could go the other way."""

    def forward(self, x):
        y = self.a(x)
        return self.fc(self.b(y if y.sum() > 0 else -y).mean((2, 3)))


class OverTheBatch(PadToEven):
    """A Python loop over the batch: the recording would hold for one batch size only."""

    def forward(self, x):
        outs = [self.b(F.relu(self.a(x[i:i + 1]))) for i in range(x.shape[0])]
        return self.fc(torch.cat(outs).mean((2, 3)))


def _refuses_fx(model: nn.Module) -> str:
    with pytest.raises(Exception) as info:
        capture.symbolic_trace(model)
    return str(info.value)


@pytest.mark.parametrize("cls, sizes", [(PadToEven, {"a": 6, "b": 8}), (SquareTokens, {"embed": 8, "mix": 8})])
def test_a_shape_branch_fx_cannot_trace_is_recorded_and_prunes_exactly(cls, sizes):
    torch.manual_seed(0)
    model, x = cls(), torch.randn(3, 3, 9, 9)
    _refuses_fx(model)
    graph = fmprune.trace(model, x[:1])
    assert graph.sizes() == sizes
    assert any(n.startswith(RECORDED) and "torch.fx failed" in n for n in graph.notes)
    assert_shrunk_equals_zeroed(model, x, rounds=2)


def test_the_pruned_model_keeps_its_branches():
    """What is pruned is the model, not the recording: an input taking the other branch (an even
    size, no padding) runs through the shrunk model like through the zeroed one."""
    torch.manual_seed(0)
    model = PadToEven().eval()
    graph = fmprune.trace(model, torch.randn(1, 3, 9, 9))
    graph.remove("a", [0, 3])
    with torch.no_grad():
        assert model(torch.randn(2, 3, 10, 10)).shape == (2, 4)


def test_a_decision_on_a_channel_count_keeps_those_maps():
    graph = fmprune.trace(CountsChannels(), torch.randn(1, 3, 9, 9))
    assert graph.sizes() == {"b": 8}
    assert any("a Python branch at node" in n and "the maps it counts are kept" in n for n in graph.notes)


@pytest.mark.parametrize("cls, why", [(OnValues, "reads the values of tensor"),
                                      (OverTheBatch, "it read the batch size in Python")])
def test_neither_tracer_works_one_line_naming_both(cls, why):
    with pytest.raises(fmprune.UnsupportedModelError) as info:
        fmprune.trace(cls(), torch.randn(1, 3, 9, 9))
    message = str(info.value)
    assert "\n" not in message
    assert f"cannot trace {cls.__name__}: torch.fx failed (" in message
    assert "and so did recording one forward pass (" in message and why in message


def test_a_forward_that_fails_names_both_tracers():
    class Picky(nn.Module):
        def forward(self, x):
            if x.shape[1] != 2:
                raise ValueError("Picky takes 2 channels")
            return x
    with pytest.raises(fmprune.UnsupportedModelError, match=r"torch\.fx failed \(TraceError: .*recording one "
                                                            r"forward pass \(ValueError: Picky takes 2 channels\)"):
        fmprune.trace(Picky(), torch.randn(1, 3))


def _fx_off(model: nn.Module):
    raise RuntimeError("torch.fx switched off by the test")


@pytest.fixture
def record_always(monkeypatch):
    """torch.fx made to fail: every model goes through the recording."""
    monkeypatch.setattr(capture, "symbolic_trace", _fx_off)


def _description(graph: fmprune.Graph) -> dict:
    """Everything the label flow decided: groups, their members' positions, the notes."""
    return {"groups": {g.name: graph.positions(g.name, range(g.size)) for g in graph.groups},
            "notes": [n for n in graph.notes if not n.startswith(RECORDED)]}


def _models():
    torch.manual_seed(0)
    cases = [(model(), shape) for model, shape, _ in graph_models.CASES.values()]
    cases += [(model(), (3, 4, 4)) for model, _ in layout_models.CASES.values()]
    return cases + [(SmallViT(), (3, 8, 8)), (AttentionWeightsUsed(), (3, 8, 8))]


@pytest.fixture
def layer_norm_2d():
    """The channels-first LayerNorm of ``support.layout_models`` registered for the duration."""
    fmprune.register_layer(layout_models.LayerNorm2d, LayerNormAdapter(axis=1))
    yield
    fmprune.unregister_layer(layout_models.LayerNorm2d)


def test_the_recording_gives_the_same_groups_and_notes_as_torch_fx(layer_norm_2d, monkeypatch):
    expected = [_description(fmprune.trace(model.eval(), torch.randn(1, *shape))) for model, shape in _models()]
    monkeypatch.setattr(capture, "symbolic_trace", _fx_off)
    for (model, shape), want in zip(_models(), expected):
        graph = fmprune.trace(model.eval(), torch.randn(1, *shape))
        assert any(n.startswith(RECORDED) for n in graph.notes)
        assert _description(graph) == want, type(model).__name__


def test_the_recording_refuses_what_torch_fx_refuses(record_always):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ChannelShuffle(2), nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(fmprune.UnsupportedModelError, match=r"module '1' \(ChannelShuffle\).*ignore=\['1'\]"):
        fmprune.trace(model, torch.zeros(1, 3, 6, 6))
    assert fmprune.trace(model, torch.zeros(1, 3, 6, 6), ignore=["1"]).sizes() == {}
