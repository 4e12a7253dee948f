"""The random criterion is random with respect to the model: its scores do not replay the stream
that initialised the weights (training seeds the global generator with the run's seed)."""

from __future__ import annotations

import pytest
import torch

import fmprune
from fmprune.criteria import create_criterion
from fmprune.data import Split
from fmprune.engine import create_engine
from fmprune.models.lenet import LeNet
from fmprune.seeding import derived_seed, independent_generator


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


def _init_stream(model: torch.nn.Module, n: int) -> torch.Tensor:
    """The first ``n`` numbers the initialisation drew: the parameters in creation order."""
    return torch.cat([p.detach().flatten() for p in model.parameters()])[:n]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fast", [True, False])
def test_random_scores_do_not_replay_the_initialisation(seed, fast):
    torch.manual_seed(seed)              # what training does before building the model
    model = LeNet().eval()
    graph = fmprune.trace(model, torch.zeros(1, 1, 28, 28))
    split = Split(torch.rand(8, 1, 28, 28), torch.arange(8) % 10)
    engine = create_engine(graph, create_criterion("random"), split, split, ["fc1"], fast=fast, seed=seed)
    scores = engine.raw_scores()["fc1"]
    assert len(scores) == 1024
    # the seeded global stream drew conv1's weights first: a replay would correlate about +1
    assert abs(_correlation(scores, _init_stream(model, 1024))) < 0.15


def test_independent_generators_are_reproducible_and_distinct():
    a = torch.rand(4, generator=independent_generator("scores", 3))
    assert torch.equal(a, torch.rand(4, generator=independent_generator("scores", 3)))
    assert not torch.equal(a, torch.rand(4, generator=independent_generator("scores", 4)))
    assert not torch.equal(a, torch.rand(4, generator=independent_generator("weight-masks", 3)))
    assert derived_seed("scores", 0) != 0
