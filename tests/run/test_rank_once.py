"""Ranking once means scoring once: a criterion that counts its calls proves that a --rank-once
run scores every layer exactly one time (with or without retraining, across a resume), while the
default protocol scores again every step. Same decisions alone cannot show this: a criterion whose
scores never change ranks the same either way."""

from __future__ import annotations

import csv
from collections import Counter
from typing import ClassVar

import pytest
import torch

from fmprune.criteria import Criterion
from fmprune.run.loop import PruneConfig, run_pruning

LAYERS = {"conv1", "conv2", "fc1"}   # the small LeNet's prunable layers


class CountingCriterion(Criterion):
    """Minimum weight (Σ|w| of the filter) that counts how often each layer is scored."""

    name = "counting_min_weight"
    calls: ClassVar[Counter] = Counter()

    def score_layer(self, ctx) -> torch.Tensor:
        CountingCriterion.calls[ctx.name] += 1
        return ctx.weight.abs().flatten(1).sum(1)


@pytest.fixture(autouse=True)
def fresh_counts():
    CountingCriterion.calls.clear()


def config(**kw) -> PruneConfig:
    return PruneConfig(criterion=CountingCriterion.name, normalize="l2", scope="all", calibration=100, **kw)


def steps_rows(run_dir) -> list[dict]:
    with open(run_dir / "steps.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("retrain", [0, 3], ids=["no-retraining", "retraining"])
def test_rank_once_scores_each_layer_exactly_once(small_ckpt, splits, tmp_path, retrain):
    summary = run_pruning(small_ckpt, splits, config(rank_once=True, steps=8, retrain=retrain), tmp_path / "r")
    assert summary.steps == 8
    assert dict(CountingCriterion.calls) == {layer: 1 for layer in LAYERS}
    # the maps go in the order of that one ranking: recorded (initial) scores never decrease,
    # though retraining changes the weights the scores were computed from
    scores = [float(r["score"]) for r in steps_rows(tmp_path / "r")[1:]]
    assert scores == sorted(scores)


def test_the_default_protocol_scores_again_every_step(small_ckpt, splits, tmp_path):
    """The counter sees recomputation: without --rank-once every layer is scored every step."""
    run_pruning(small_ckpt, splits, config(steps=8), tmp_path / "r")
    assert set(CountingCriterion.calls) == LAYERS
    assert all(n >= 8 for n in CountingCriterion.calls.values()), CountingCriterion.calls


def test_a_resumed_rank_once_run_keeps_its_ranking_and_scores_nothing(small_ckpt, splits, tmp_path):
    cfg = config(rank_once=True, steps=6, retrain=2, save_every=1)
    run_pruning(small_ckpt, splits, cfg, tmp_path / "whole")

    class Crash(Exception):
        pass

    def crash_at_step_3(record, total):
        if record.step == 3:
            raise Crash

    with pytest.raises(Crash):
        run_pruning(small_ckpt, splits, cfg, tmp_path / "killed", on_step=crash_at_step_3)
    CountingCriterion.calls.clear()
    run_pruning(small_ckpt, splits, cfg, tmp_path / "killed")
    assert sum(CountingCriterion.calls.values()) == 0, CountingCriterion.calls
    undated = [[{k: v for k, v in r.items() if k != "seconds"} for r in steps_rows(tmp_path / d)]
               for d in ("whole", "killed")]
    assert undated[0] == undated[1]


@pytest.fixture(autouse=True, scope="module")
def _unregister_test_criterion():
    """The criterion this module registers is gone once its tests ran (the registry is global)."""
    yield
    Criterion.registry.pop("counting_min_weight", None)
