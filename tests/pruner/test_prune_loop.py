"""fmprune.prune: the protocol of `fmprune prune` on a user's model, data, loss and metric."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fmprune
from fmprune.models.lenet import LeNet
from support.paths import ROOT, SUPPORT
from support.prune_loop_worker import setup

WORKER = SUPPORT / "prune_loop_worker.py"


def run_worker(run_dir: Path, kill_at: int) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, str(WORKER), str(run_dir), str(kill_at)], env=env,
                          timeout=300).returncode


def test_kill_9_then_resume_gives_the_uninterrupted_run(tmp_path):
    assert run_worker(tmp_path / "whole", -1) == 0
    assert run_worker(tmp_path / "killed", 3) == -9
    assert (tmp_path / "killed" / "state.pt").exists() and not (tmp_path / "killed" / "summary.json").exists()
    assert run_worker(tmp_path / "killed", -1) == 0
    whole = (tmp_path / "whole" / "steps.csv").read_text().splitlines()
    resumed = (tmp_path / "killed" / "steps.csv").read_text().splitlines()
    strip = lambda lines: [",".join(line.split(",")[:-1]) for line in lines]   # all but the seconds
    assert strip(resumed) == strip(whole) and len(whole) == 1 + 1 + 6 * 2
    assert not (tmp_path / "killed" / "state.pt").exists()
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["stop_reason"] == "6 steps done"
    assert "Resumed at step 3" in (tmp_path / "killed" / "run.log").read_text()


def test_target_and_min_metric(capsys):
    model, batches, loss_fn, evaluate = setup()
    result = fmprune.prune(model, torch.zeros(1, 1, 28, 28), batches, loss_fn, evaluate, target_macs=0.5,
                           maps_per_step=3, calibration_batches=1)
    assert result.stop_reason == "target size reached" and result.mac_reduction >= 2
    assert "Done (target size reached)" in capsys.readouterr().out

    model, batches, loss_fn, evaluate = setup()
    base = evaluate(model)
    metrics = []
    result = fmprune.prune(model, torch.zeros(1, 1, 28, 28), batches, loss_fn, evaluate, maps_per_step=4,
                           min_metric=base, calibration_batches=1, verbose=False,
                           on_step=lambda step, metric, p, m: metrics.append(metric))
    assert result.stop_reason == f"metric would fall under {base}"
    assert all(m >= base for m in metrics) and result.final_metric >= base
    assert evaluate(model) == result.final_metric                   # the failing step was undone
    out = model(torch.zeros(2, 1, 28, 28))                           # and the model still runs
    assert out.shape == (2, 10)


@pytest.mark.parametrize("kwargs, message", [
    ({"target_macs": 0.0}, r"target_macs must be a fraction in \(0, 1\] of the model's size, got 0.0"),
    ({"target_params": 2}, r"target_params must be a fraction in \(0, 1\] of the model's size, got 2"),
    ({"target_macs": float("nan")}, "target_macs must be a fraction in"),
    ({"maps_per_step": 1.5}, "maps_per_step must be an integer count"),
    ({"retrain_steps": -1}, "retrain_steps must be an integer"),
    ({"calibration_batches": 0}, "calibration_batches must be an integer"),
    ({"criterion": "nope"}, "unknown criterion"),
])
def test_bad_arguments_are_one_line_before_any_work(kwargs, message):
    model, batches, loss_fn, evaluate = setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(fmprune.FmpruneError, match=message) as error:
        fmprune.prune(model, torch.zeros(1, 1, 28, 28), batches, loss_fn, evaluate, **kwargs)
    assert "\n" not in str(error.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("bad_loss, message", [
    (lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="none"),
     r"loss_fn\(model, batch\) must return a scalar loss tensor, got a tensor of shape \(32,\) \(reduce it"),
    (lambda out, y: torch.nn.functional.cross_entropy(out, y).item(),
     r"loss_fn\(model, batch\) must return a scalar loss tensor, got float"),
    (lambda out, y: torch.nn.functional.cross_entropy(out, y).detach(),
     r"loss_fn\(model, batch\) returned a loss with no gradient path to the model"),
])
def test_a_loss_fn_that_returns_no_differentiable_scalar_is_one_line(bad_loss, message):
    model, batches, _, evaluate = setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(fmprune.FmpruneError, match=message) as error:
        fmprune.prune(model, torch.zeros(1, 1, 28, 28), batches, lambda m, b: bad_loss(m(b[0]), b[1]), evaluate,
                      maps_per_step=2, max_steps=1, verbose=False)
    assert "\n" not in str(error.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_save_and_load_a_pruned_model_of_the_users_class(tmp_path):
    model, batches, loss_fn, evaluate = setup()
    fmprune.prune(model, torch.zeros(1, 1, 28, 28), batches, loss_fn, evaluate, maps_per_step=5,
                  max_steps=2, calibration_batches=1, verbose=False)
    path = fmprune.save(model, tmp_path / "m.pt")
    loaded = fmprune.load(lambda: LeNet(widths=(6, 8, 24)), path)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(loaded.eval()(x), model.eval()(x))
    assert [p.shape for p in loaded.parameters()] == [p.shape for p in model.parameters()]
    torch.load(path, weights_only=True)                              # no pickled code inside
    # saved again from the loaded model: the numbering of the unpruned model is kept
    again = fmprune.load(lambda: LeNet(widths=(6, 8, 24)), fmprune.save(loaded, tmp_path / "again.pt"))
    assert torch.equal(again.eval()(x), model.eval()(x))


def test_a_loaded_model_pruned_further_keeps_the_unpruned_numbering(tmp_path):
    """A Pruner made on a loaded model uses the graph load traced (original indices), so what it
    removes is named, and saved again, in the unpruned model's numbering."""
    model, batches, loss_fn, evaluate = setup()
    fmprune.prune(model, torch.zeros(1, 1, 28, 28), batches, loss_fn, evaluate, maps_per_step=5,
                  max_steps=2, calibration_batches=1, verbose=False)
    first = torch.load(fmprune.save(model, tmp_path / "m.pt"), weights_only=True)["alive"]
    loaded = fmprune.load(lambda: LeNet(widths=(6, 8, 24)), tmp_path / "m.pt")
    pruner = fmprune.Pruner(loaded, torch.zeros(1, 1, 28, 28), criterion="l1_filter")
    removed = pruner.step(maps=3)
    for s in removed:                              # original = the file's numbering, not 0..n-1
        assert s.original == first[s.layer][s.index]
    second = torch.load(fmprune.save(loaded, tmp_path / "m2.pt"), weights_only=True)["alive"]
    gone = {(s.layer, s.original) for s in removed}
    assert second == {g: [i for i in kept if (g, i) not in gone] for g, kept in first.items()}
    assert any(kept != list(range(len(kept))) for kept in second.values())


def test_a_loaded_model_changed_after_loading_is_pruned_as_it_is_now(tmp_path):
    """The numbering comes from the file's structure; modules, dtype and device from the model as
    it is when the Pruner is made: a replaced head, a model in float64."""
    model = LeNet(widths=(6, 8, 24))
    path = fmprune.save(model, tmp_path / "m.pt", example_inputs=torch.zeros(1, 1, 28, 28))
    loaded = fmprune.load(lambda: LeNet(widths=(6, 8, 24)), path)
    loaded.fc2 = torch.nn.Linear(24, 5)                              # a new head for another task
    fmprune.Pruner(loaded, torch.zeros(1, 1, 28, 28), criterion="l1_filter").step(maps=3)
    assert loaded(torch.rand(2, 1, 28, 28)).shape == (2, 5) and loaded.fc2.in_features <= 24
    loaded = fmprune.load(lambda: LeNet(widths=(6, 8, 24)), path).double()
    fmprune.Pruner(loaded, torch.zeros(1, 1, 28, 28, dtype=torch.float64), criterion="l1_filter").step(
        target_macs=0.9)
    assert loaded(torch.rand(2, 1, 28, 28, dtype=torch.float64)).dtype == torch.float64


def test_remembering_a_pruned_models_structure_does_not_keep_the_model_alive():
    import gc
    import weakref
    model = LeNet(widths=(6, 8, 24))
    pruner = fmprune.Pruner(model, torch.zeros(1, 1, 28, 28), criterion="l1_filter")
    pruner.step(maps=2)
    gone = weakref.ref(model)
    del model, pruner
    gc.collect()
    assert gone() is None


def test_load_refuses_what_does_not_fit(tmp_path):
    model = LeNet(widths=(6, 8, 24))
    path = fmprune.save(model, tmp_path / "m.pt", example_inputs=torch.zeros(1, 1, 28, 28))
    with pytest.raises(fmprune.FmpruneError, match="group 'conv1' keeps maps the built model does not have \\(2 maps: 4, 5; the built group has 4\\)"):
        fmprune.load(lambda: LeNet(widths=(4, 8, 24)), path)
    with pytest.raises(fmprune.FmpruneError, match="group .conv1. is not in the model"):
        fmprune.load(lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), path)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(fmprune.FmpruneError, match="not a readable fmprune model file"):
        fmprune.load(LeNet, tmp_path / "junk.pt")
    with pytest.raises(fmprune.FmpruneError, match="no such file"):
        fmprune.load(LeNet, tmp_path / "none.pt")
    with pytest.raises(fmprune.FmpruneError, match="pass example_inputs"):
        fmprune.save(LeNet(), tmp_path / "x.pt")


def test_a_finished_run_asked_again_gives_its_result_and_model(tmp_path):
    model, batches, loss_fn, evaluate = setup()
    kwargs = dict(maps_per_step=3, max_steps=2, calibration_batches=1, run_dir=tmp_path / "r", verbose=False)
    first = fmprune.prune(model, torch.zeros(1, 1, 28, 28), batches, loss_fn, evaluate, **kwargs)
    fresh, batches, loss_fn, evaluate = setup()
    again = fmprune.prune(fresh, torch.zeros(1, 1, 28, 28), batches, loss_fn, evaluate, **kwargs)
    assert again == first
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(fresh.eval()(x), model.eval()(x))
