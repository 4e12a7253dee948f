"""TensorBoard event files: what the logger writes is what TensorBoard reads back."""

import sys
from types import SimpleNamespace

import pytest

from fmprune.errors import FmpruneError
from fmprune.run.tensorboard import TensorBoardLogger, TensorBoardMissing, chain, require_tensorboard
from support.tensorboard_events import read_scalars


def test_pruning_and_training_steps_become_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    with TensorBoardLogger(tmp_path / "prune") as tb:
        for step, acc in enumerate([0.99, 0.98, 0.5]):
            tb.on_prune_step(SimpleNamespace(step=step, accuracy=acc, params=1000 - step, macs=5000 - 10 * step), 3)
        tb.on_prune_step(SimpleNamespace(step=3, accuracy=0.4, params=990, macs=4900, loss=1.25), 3)
    scalars = read_scalars(tmp_path / "prune")
    assert scalars["accuracy"] == [(0, pytest.approx(0.99)), (1, pytest.approx(0.98)), (2, 0.5), (3, pytest.approx(0.4))]
    assert scalars["params"] == [(0, 1000), (1, 999), (2, 998), (3, 990)]
    assert scalars["macs"][-1] == (3, 4900)
    assert scalars["loss"] == [(3, 1.25)]              # a step without a loss writes none
    with TensorBoardLogger(tmp_path / "train", prefix="train/") as tb:
        for epoch in range(2):                     # a recipe that numbers iterations per epoch
            for step in range(1, 3):
                tb.on_train_step(step, 2, 1.0 / (2 * epoch + step))
            tb.on_train_epoch(epoch, 2, {"val": 0.5 + epoch / 4})
    assert read_scalars(tmp_path / "train") == {
        "train/loss": [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3)), (4, 0.25)],
        "train/accuracy": [(2, 0.5), (4, 0.75)]}


def test_hooks_chain_in_order():
    seen = []
    chain(lambda *a: seen.append(("bar",) + a), None, lambda *a: seen.append(("tb",) + a))(1, 10, 0.5)
    assert seen == [("bar", 1, 10, 0.5), ("tb", 1, 10, 0.5)]


def test_a_resumed_run_replaces_the_steps_it_redoes(tmp_path):
    pytest.importorskip("tensorboard")
    with TensorBoardLogger(tmp_path) as tb:
        for step in range(6):
            tb.log(step, accuracy=0.9)
    with TensorBoardLogger(tmp_path, purge_step=4) as tb:   # resumed from the state saved at step 4
        for step in range(4, 6):
            tb.log(step, accuracy=0.5)
    assert read_scalars(tmp_path)["accuracy"] == [(s, pytest.approx(0.9 if s < 4 else 0.5)) for s in range(6)]


def test_without_tensorboard_one_line_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)          # import tensorboard -> ImportError
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    with pytest.raises(TensorBoardMissing, match=r"needs the tensorboard package: pip install 'fmprune\[tensorboard\]'"):
        TensorBoardLogger(tmp_path / "tb")
    with pytest.raises(FmpruneError):
        require_tensorboard()
    assert not (tmp_path / "tb").exists()



def test_a_restarted_run_purges_the_steps_it_redoes(tmp_path):
    """A fresh run purges nothing; an interrupted run without a resume state (no retraining)
    restarts from the base model, so its old events go from step 0; with a state, after it."""
    import torch

    from fmprune.run.tensorboard import resumed_step
    assert resumed_step(tmp_path / "new") is None
    (tmp_path / "steps.csv").write_text("step\n0\n1\n")
    assert resumed_step(tmp_path) == 0
    torch.save({"step": 6}, tmp_path / "state.pt")
    assert resumed_step(tmp_path) == 7
