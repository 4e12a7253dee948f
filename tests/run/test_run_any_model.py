"""The pruning protocol on a residual model of the user's own (built from ``file.py:factory``):
retraining with Adam through group surgery, a resumed run equal to an uninterrupted one, and a
compact model.pt that rebuilds from its spec."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from fmprune.data import Split, Splits
from fmprune.models.spec import ModelSpec, build_model
from fmprune.run.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from fmprune.run.config import PruneConfig
from fmprune.run.loop import run_pruning
from support.paths import SUPPORT

FACTORY = f"{SUPPORT / 'graph_models.py'}:ResidualBN"


def _split(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) > x[:, 1].mean((1, 2))).long() + 2 * (x[:, 2, :4].mean((1, 2)) > 0.5).long()
    return Split(x, y)


@pytest.fixture(scope="module")
def residual_setup(tmp_path_factory):
    splits = Splits(_split(300, 0), _split(100, 1), _split(100, 2), source="synthetic", classes=4)
    spec = ModelSpec(FACTORY, num_classes=4, input_shape=(3, 8, 8))
    torch.manual_seed(0)
    model = build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for i in range(60):   # a little training: the scores are then not all alike
        batch = slice((i * 50) % 300, (i * 50) % 300 + 50)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(splits.train.images[batch]), splits.train.labels[batch]).backward()
        opt.step()
    path = save_checkpoint(make_checkpoint(model.eval(), spec, data_fingerprint=splits.fingerprint()),
                           tmp_path_factory.mktemp("res") / "base.pt")
    return splits, path


def _rows(run: Path) -> list[tuple]:
    with open(run / "steps.csv") as f:
        return [(r["step"], r["layer"], r["map"], r["accuracy"], r["params"], r["macs"]) for r in csv.DictReader(f)]


def test_prune_with_retraining_resumes_identically(residual_setup, tmp_path):
    splits, base = residual_setup
    cfg = PruneConfig(criterion="taylor", normalize="l2", steps=6, maps_per_step=2, retrain=3,
                      retrain_batch=50, save_every=2, calibration=200, flops_lambda=1e-3)
    whole = run_pruning(base, splits, cfg, tmp_path / "whole")

    class Crash(Exception):
        pass

    def crash(rec, total):
        if rec.step == 5:
            raise Crash
    with pytest.raises(Crash):
        run_pruning(base, splits, cfg, tmp_path / "crashed", on_step=crash)
    run_pruning(base, splits, cfg, tmp_path / "crashed")
    assert _rows(tmp_path / "crashed") == _rows(tmp_path / "whole")
    assert whole.steps == 6 and sum(whole.maps_pruned.values()) == 12
    assert whole.final_params < whole.base_params and whole.final_macs < whole.base_macs
    # the residual stream is one group: its producers all lost the same maps
    ckpt = load_checkpoint(tmp_path / "whole" / "model.pt")
    model, graph = ckpt.build_traced()
    stream = graph.group("stem").size
    assert model.stem.out_channels == model.a2.out_channels == model.c2.out_channels == model.bn.num_features == stream
    assert graph.sizes() == whole.maps_left
    a = load_checkpoint(tmp_path / "crashed" / "model.pt").build()
    x = splits.test.images[:20]
    assert torch.equal(a(x), model(x))


def test_scope_of_one_group_and_the_output_layer_refused(residual_setup, tmp_path):
    splits, base = residual_setup
    summary = run_pruning(base, splits, PruneConfig(criterion="l1_filter", scope="a1", steps=3, calibration=100), tmp_path / "a1")
    assert summary.maps_left["a1"] == 3 and summary.maps_pruned == {**{n: 0 for n in summary.maps_left}, "a1": 3}
    from fmprune.errors import PruningError
    with pytest.raises(PruningError, match="'fc' is not prunable"):
        run_pruning(base, splits, PruneConfig(scope="fc", steps=1, calibration=100), tmp_path / "fc")
