"""The pruning loop end to end on a small trained LeNet and synthetic IDX data."""

import csv
import json
import re
import shutil

import pytest
import torch

from fmprune.run.checkpoint import load_checkpoint, save_checkpoint
from fmprune.data import sha256_file
from fmprune.errors import FmpruneError
from fmprune.run.loop import PruneConfig, run_pruning
from fmprune.training import evaluate

LOG_LINE = re.compile(r"^\[\d+\] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO (\w+)\| "
                      r"Test accuracy (\d\.\d{8}), pruned: (\d+)$")


def read_steps(run_dir):
    with open(run_dir / "steps.csv", newline="") as f:
        return list(csv.DictReader(f))


def decisions(run_dir):
    """Everything a run decided and measured, without wall-clock times."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_steps(run_dir)]


def test_no_retrain_run_writes_seed_log_steps_and_a_compact_model(small_ckpt, splits, tmp_path):
    run = tmp_path / "run"
    summary = run_pruning(small_ckpt, splits, PruneConfig(criterion="taylor", normalize="l2"), run)
    removable = 5 + 7 + 23
    rows = read_steps(run)
    assert len(rows) == removable + 1 and rows[0]["step"] == "0"
    assert [int(r["step"]) for r in rows[1:]] == list(range(1, removable + 1))
    log = (run / "run.log").read_text().splitlines()
    matches = [LOG_LINE.match(line) for line in log]
    assert all(matches) and {m.group(1) for m in matches} == {"Taylor"}
    assert [int(m.group(3)) for m in matches] == list(range(removable + 1))
    assert [m.group(2) for m in matches] == [r["accuracy"] for r in rows]
    # the compact model is what the last row says, and scores what it says
    model, graph = load_checkpoint(run / "model.pt").build_traced()
    assert graph.sizes() == {"conv1": 1, "conv2": 1, "fc1": 1} and model.fc2.out_features == 10
    assert (graph.total_params(), graph.total_macs()) == (int(rows[-1]["params"]), int(rows[-1]["macs"]))
    assert evaluate(model, splits.val) == pytest.approx(float(rows[-1]["accuracy"]), abs=1e-7)
    assert summary.steps == removable and summary.final_params == int(rows[-1]["params"])
    config = (run / "config.json").read_text()
    assert '"criterion": "taylor"' in config and str(small_ckpt) in config
    # original numbering: every map of every layer but one was removed exactly once
    for layer, n in (("conv1", 6), ("conv2", 8), ("fc1", 24)):
        maps = [int(r["map"]) for r in rows[1:] if r["layer"] == layer]
        assert len(maps) == len(set(maps)) == n - 1 and set(maps) <= set(range(n))


def test_min_accuracy_keeps_the_last_model_at_or_above_the_floor(small_ckpt, splits, tmp_path):
    base = float(read_steps_after(small_ckpt, splits, tmp_path / "probe")[0]["accuracy"])
    floor = round(base - 0.05, 2)
    summary = run_pruning(small_ckpt, splits, PruneConfig(criterion="min_weight", normalize="l2",
                                                          min_accuracy=floor), tmp_path / "run")
    rows = read_steps(tmp_path / "run")
    assert summary.stop_reason == f"accuracy would fall under {floor}"
    assert all(float(r["accuracy"]) >= floor for r in rows)
    model, graph = load_checkpoint(tmp_path / "run" / "model.pt").build_traced()
    assert graph.total_params() == int(rows[-1]["params"])
    assert evaluate(model, splits.val) == pytest.approx(summary.final_accuracy, abs=1e-7)
    assert summary.final_accuracy >= floor
    assert "Stopped: step" in (tmp_path / "run" / "run.log").read_text()


def read_steps_after(ckpt, splits, run_dir):
    run_pruning(ckpt, splits, PruneConfig(criterion="random", steps=0), run_dir)
    return read_steps(run_dir)


def test_rank_once_prunes_in_the_initial_order(small_ckpt, splits, tmp_path):
    recompute = decisions_of(small_ckpt, splits, tmp_path / "a", rank_once=False)
    once = decisions_of(small_ckpt, splits, tmp_path / "b", rank_once=True)
    # min_weight without normalisation on conv2 alone never changes (conv1 is untouched), so
    # ranking once and recomputing must agree; the recorded scores are the initial ones
    assert [r["map"] for r in recompute] == [r["map"] for r in once]
    scores = [float(r["score"]) for r in once[1:]]
    assert scores == sorted(scores)


def decisions_of(ckpt, splits, run_dir, rank_once):
    run_pruning(ckpt, splits, PruneConfig(criterion="min_weight", normalize="none", scope="conv2",
                                          rank_once=rank_once), run_dir)
    return read_steps(run_dir)


def test_target_fraction_and_several_maps_per_step(small_ckpt, splits, tmp_path):
    summary = run_pruning(small_ckpt, splits, PruneConfig(criterion="taylor", maps_per_step=0.25,
                                                          target_params=0.5), tmp_path / "r")
    rows = read_steps(tmp_path / "r")
    assert summary.stop_reason == "target size reached"
    before_last = [r for r in rows if int(r["step"]) == summary.steps - 1][-1]
    assert summary.final_params <= 0.5 * summary.base_params < int(before_last["params"])
    first_step = [r for r in rows if r["step"] == "1"]
    assert len(first_step) == int(0.25 * 38)     # a quarter of the 38 maps in scope


def test_params_and_macs_targets_together_stop_only_when_both_are_met(small_ckpt, splits, tmp_path):
    config = PruneConfig(criterion="taylor", maps_per_step=0.1, target_params=0.5, target_macs=0.6)
    summary = run_pruning(small_ckpt, splits, config, tmp_path / "r")
    assert summary.stop_reason == "target size reached"
    assert summary.final_params <= 0.5 * summary.base_params and summary.final_macs <= 0.6 * summary.base_macs
    rows = read_steps(tmp_path / "r")
    before_last = [r for r in rows if int(r["step"]) == summary.steps - 1][-1]
    assert (int(before_last["params"]) > 0.5 * summary.base_params
            or int(before_last["macs"]) > 0.6 * summary.base_macs)


def test_retraining_changes_weights_and_only_the_pruned_layer_when_asked(small_ckpt, splits, tmp_path):
    cfg = dict(criterion="taylor", scope="fc1", steps=3, retrain=5, retrain_lr=1e-3)
    run_pruning(small_ckpt, splits, PruneConfig(**cfg, retrain_only_pruned_layer=True), tmp_path / "only")
    run_pruning(small_ckpt, splits, PruneConfig(**cfg), tmp_path / "all")
    base = load_checkpoint(small_ckpt).state_dict
    only, every = (load_checkpoint(tmp_path / d / "model.pt").state_dict for d in ("only", "all"))
    for name in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc2.bias"):
        assert torch.equal(only[name], base[name]), name
    assert not torch.equal(only["fc1.bias"], base["fc1.bias"][:21])
    assert not torch.equal(every["conv1.weight"], base["conv1.weight"])
    assert only["fc1.weight"].shape == (21, 8 * 49)


def test_resume_after_a_crash_gives_the_uninterrupted_results(small_ckpt, splits, tmp_path):
    cfg = PruneConfig(criterion="taylor", normalize="l2", steps=9, retrain=4, save_every=2)
    run_pruning(small_ckpt, splits, cfg, tmp_path / "whole")

    class Crash(Exception):
        pass

    def crash_at_step_7(rec, total):
        if rec.step == 7:
            raise Crash

    with pytest.raises(Crash):
        run_pruning(small_ckpt, splits, cfg, tmp_path / "crashed", on_step=crash_at_step_7)
    assert len(read_steps(tmp_path / "crashed")) == 8      # step 7 was written, state saved at 6
    run_pruning(small_ckpt, splits, cfg, tmp_path / "crashed")
    assert decisions(tmp_path / "crashed") == decisions(tmp_path / "whole")
    a = load_checkpoint(tmp_path / "whole" / "model.pt").state_dict
    b = load_checkpoint(tmp_path / "crashed" / "model.pt").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "Resumed at step 6" in (tmp_path / "crashed" / "run.log").read_text()


def test_a_run_directory_is_never_overwritten_by_another_configuration(small_ckpt, splits, tmp_path):
    first = run_pruning(small_ckpt, splits, PruneConfig(criterion="random", steps=2), tmp_path / "r")
    again = run_pruning(small_ckpt, splits, PruneConfig(criterion="random", steps=2), tmp_path / "r")
    assert again.to_dict() == first.to_dict()                     # a finished run: its summary again
    with pytest.raises(FmpruneError, match="different configuration"):
        run_pruning(small_ckpt, splits, PruneConfig(criterion="taylor", steps=2), tmp_path / "r")
    assert len(read_steps(tmp_path / "r")) == 3


def test_a_run_records_its_base_checkpoint_and_never_resumes_from_another(small_ckpt, splits, tmp_path):
    base = tmp_path / "base.pt"
    shutil.copy(small_ckpt, base)
    cfg = PruneConfig(criterion="taylor", steps=4, retrain=2, save_every=1)

    def crash_at_step_3(rec, total):
        if rec.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pruning(base, splits, cfg, tmp_path / "r", on_step=crash_at_step_3)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["base_checkpoint_sha256"] == sha256_file(small_ckpt)
    changed = load_checkpoint(base)
    changed.state_dict["fc2.bias"] += 1.0
    save_checkpoint(changed, base)
    with pytest.raises(FmpruneError, match="another base checkpoint"):
        run_pruning(base, splits, cfg, tmp_path / "r")


@pytest.mark.parametrize("kwargs, message", [
    ({"criterion": "magic"}, "unknown criterion 'magic'"),
    ({"normalize": "l7"}, "unknown normalisation 'l7'"),
    ({"min_accuracy": 1.5}, "min accuracy must be a fraction"),
    ({"maps_per_step": 2.5}, "maps per step must be a positive integer"),
    ({"retrain_only_pruned_layer": True}, "needs --retrain N"),
])
def test_bad_configurations_are_refused(kwargs, message):
    with pytest.raises(FmpruneError, match=message):
        PruneConfig(**kwargs)


def test_unknown_scope_and_foreign_data_are_refused(small_ckpt, splits, tmp_path):
    with pytest.raises(FmpruneError, match="fc2"):
        run_pruning(small_ckpt, splits, PruneConfig(scope="fc2"), tmp_path / "a")
    with pytest.raises(FmpruneError, match="conv9"):
        run_pruning(small_ckpt, splits, PruneConfig(scope="conv9"), tmp_path / "b")
    other = type(splits)(splits.train.subset(500), splits.val, splits.test, "other")
    with pytest.raises(FmpruneError, match="trained on other data"):
        run_pruning(small_ckpt, other, PruneConfig(), tmp_path / "c")


def test_final_tuning_runs_after_the_last_step_and_never_lowers_accuracy(small_ckpt, splits, tmp_path):
    cfg = PruneConfig(criterion="taylor", scope="fc1", maps_per_step=4, steps=5, final_tune=30, final_tune_lr=3e-3)
    summary = run_pruning(small_ckpt, splits, cfg, tmp_path / "r")
    before = summary.extra["accuracy_before_final_tune"]
    rows = read_steps(tmp_path / "r")
    assert before == pytest.approx(float(rows[-1]["accuracy"]), abs=1e-7)
    assert summary.final_accuracy >= before
    assert "Final tuning (30 iterations)" in (tmp_path / "r" / "run.log").read_text()
    model = load_checkpoint(tmp_path / "r" / "model.pt").build()
    assert evaluate(model, splits.val) == pytest.approx(summary.final_accuracy, abs=1e-7)
