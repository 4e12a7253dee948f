"""The general engine kept across removals (rescoring only what a removal can change, replaying
from kept cut values) scores, decides and evaluates exactly as an engine rebuilt from scratch
every step, for each way it rescores: weights (groups with a cut layer), activations (groups
downstream of the cut layers), gradients (a fresh pass)."""

from __future__ import annotations

import copy

import pytest
import torch

import fmprune
from fmprune.criteria import Criterion, available_criteria, create_criterion
from fmprune.data import Split
from fmprune.errors import FmpruneError
from fmprune.engine import GraphEngine
from fmprune.engine.general import graph_engine
from support.graph_models import ResidualBN, randomize_norms

EXAMPLE = torch.zeros(1, 3, 8, 8)


def _splits() -> tuple[Split, Split]:
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(130, 3, 8, 8, generator=g), torch.randint(0, 4, (130,), generator=g)
    return Split(x[:70], y[:70]), Split(x[70:], y[70:])


def _engine(model: torch.nn.Module, criterion: str, removed: list[tuple[str, int]]) -> GraphEngine:
    graph = fmprune.trace(model, EXAMPLE)
    for group, original in removed:
        graph.remove(group, [graph.group(group).original.index(original)])
    calibration, evaluation = _splits()
    return GraphEngine(graph, create_criterion(criterion), evaluation, calibration, graph.names, "l2")


# every registered criterion (a new one is tested with no test edit); the costly ones run with -m slow
SLOW = {"oracle", "oracle_abs", "obd", "obd_hutchinson", "thinet"}
# a fresh draw per engine: a rebuilt engine draws anew, so equal decisions are not their contract
# (test_random_criterion.py checks how they are seeded)
STOCHASTIC = {"random", "obd_hutchinson"}


# fmprune's own: other test modules register (and unregister) criteria of their own while collected
SHIPPED = [n for n in available_criteria() if Criterion.registry[n].__module__.startswith("fmprune.")]


@pytest.mark.parametrize("criterion", [pytest.param(n, marks=pytest.mark.slow if n in SLOW else ())
                                       for n in SHIPPED])
def test_a_kept_engine_equals_one_rebuilt_every_step(monkeypatch, criterion):
    if criterion in STOCHASTIC:
        pytest.skip(f"{criterion} draws at random")
    monkeypatch.setattr(graph_engine, "CHUNK", 25)  # three calibration chunks, the last one short
    torch.manual_seed(0)
    base = randomize_norms(ResidualBN())
    try:
        kept = _engine(copy.deepcopy(base), criterion, [])
        kept.raw_scores()
    except FmpruneError as e:   # groups without BatchNorm (refused when the engine is made), or with several readers
        if criterion not in ("slimming", "taylor_bn", "thinet"):
            raise
        pytest.skip(f"{criterion} cannot score this residual model: {e}")
    removed: list[tuple[str, int]] = []
    for step in range(6):
        rebuilt = _engine(copy.deepcopy(base), criterion, removed)
        want, got = rebuilt.raw_scores(), kept.raw_scores()
        assert want.keys() == got.keys()
        for name in want:                            # bit for bit: same ops on the same values
            assert torch.equal(want[name], got[name]), f"step {step}: {name}"
        a, b = rebuilt.select(1), kept.select(1)
        assert [(s.layer, s.original) for s in a] == [(s.layer, s.original) for s in b], f"step {step}"
        group = kept.graph.names[step % len(kept.graph.names)]   # every group in turn, not only the chosen
        index = int(got[group].argmin())
        removed.append((group, kept.graph.alive(group)[index]))
        rebuilt.remove(group, [index])
        kept.remove(group, [index])
        assert kept.accuracy() == rebuilt.accuracy(), f"step {step}"


def _calls(module: torch.nn.Module) -> list[int]:
    count = [0]
    module.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count


@pytest.mark.parametrize("criterion, rescored", [
    ("l1_filter", set()),                                 # its own scores only lose the removed map
    ("mean_activation", {"down"}),                        # the others' feature maps lie before its layers
    ("taylor", {"stem", "a1", "c1", "down"}),             # a gradient reaches every earlier map
])
def test_a_removal_near_the_output_rescores_only_what_it_can_change(criterion, rescored):
    torch.manual_seed(0)
    engine = _engine(randomize_norms(ResidualBN()), criterion, [])
    engine.raw_scores()
    stem = _calls(engine.graph.model.stem)
    engine.remove("down", [0])
    assert {n for n, s in engine.raw.items() if s is None} == rescored
    engine.raw_scores()
    assert stem[0] == (1 if criterion == "taylor" else 0)   # taylor: a fresh pass (one chunk)
