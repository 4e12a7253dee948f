"""Recipe search with Optuna: tune files, objective, pruned trials, resumption after a kill."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from fmprune.cli import cli
from fmprune.errors import FmpruneError
from fmprune.run.loop import run_pruning
from fmprune.study.report import read_curve
from fmprune.study.tune_spec import Objective, load_tune_file
from support.paths import ROOT
from support.run_dirs import write_run

SMALL = """
[study]
name = "small"
trials = 3
sampler = "random"
pruner = "none"
seed = 0
[objective]
minimize = "macs"
accuracy = 0.5
[settings]
steps = 4
calibration = 100
eval_size = 200
retrain_batch = 50
save_every = 1
[params]
maps_per_step = { low = 1, high = 3, type = "int" }
retrain = { low = 1, high = 3 }
"""


def write(tmp_path: Path, text: str = SMALL, name: str = "t.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "steps.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


@pytest.mark.parametrize("change, message", [
    (("[params]", "[parms]"), "unknown section 'parms'"),
    (('minimize = "macs"', 'minimize = "flops"'), "'objective.minimize' must be one of macs, params, score"),
    (("accuracy = 0.5", "accuracy = 98"), r"'objective.accuracy' must be a fraction in \(0, 1\]"),
    (("low = 1, high = 3 }", "low = 3, high = 1 }"), "'params.retrain': low 3 must be under high 1"),
    (("retrain = {", "retrian = {"), "unknown parameter 'params.retrian'"),
    (('type = "int"', 'type = "str"'), r"'params.maps_per_step.type' = 'str' should be 'int' or 'float'"),
    (("retrain = { low = 1, high = 3 }", 'retrain = { low = 1.5, high = 3 }'), "'params.retrain.low' = 1.5 should be an integer"),
    (("retrain = { low = 1, high = 3 }", 'criterion = { low = 1, high = 3 }'), r"'params.criterion' is not numeric"),
    (("retrain = { low = 1, high = 3 }", 'criterion = { choices = ["taylor", "magic"] }'), "make no run: unknown criterion 'magic'"),
    (("retrain = { low = 1, high = 3 }", "steps = { low = 1, high = 3 }"), "'steps' is both in settings and in params"),
    (('sampler = "random"', 'sampler = "anneal"'), "'study.sampler' = 'anneal' is not one of tpe, random, grid"),
    (('name = "small"', 'name = "a b"'), "'study.name' is required"),
    (("[params]\nmaps_per_step = { low = 1, high = 3, type = \"int\" }\nretrain = { low = 1, high = 3 }", "[params]"),
     "'params' names no parameter to search"),
    (("retrain = { low = 1, high = 3 }", "flops_lambda = { low = 0, high = 1, log = true }"),
     "a log range needs low > 0"),
    (("retrain = { low = 1, high = 3 }", "flops_lambda = { low = nan, high = 1.0 }"),
     r"'params.flops_lambda.low': flops lambda must be a number >= 0, got nan"),
    (("retrain = { low = 1, high = 3 }", "retrain_lr = { low = -1e-3, high = 1e-3 }"),
     r"'params.retrain_lr.low': retrain lr must be a positive number, got -0.001"),
    (("retrain = { low = 1, high = 3 }", "min_accuracy = { low = 0.5, high = inf }"),
     r"'params.min_accuracy.high': min accuracy must be a fraction in \(0, 1\], got inf"),
    (('minimize = "macs"\naccuracy = 0.5', 'maximize = "loss"'), "'objective.maximize' = 'loss': only \"accuracy\""),
    (('minimize = "macs"\naccuracy = 0.5', 'maximize = "accuracy"\naccuracy = 0.5'), "'objective.maximize' goes alone"),
    (('minimize = "macs"\naccuracy = 0.5', 'maximize = "accuracy"'), "needs a size target in \\[settings\\]: target_macs"),
])
def test_bad_tune_files_name_the_bad_key(tmp_path, change, message):
    with pytest.raises(FmpruneError, match=message):
        load_tune_file(write(tmp_path, SMALL.replace(*change)))


def test_a_grid_tries_each_choice_and_each_step_of_a_range_once(tmp_path):
    text = SMALL.replace('sampler = "random"', 'sampler = "grid"').replace(
        "retrain = { low = 1, high = 3 }", "flops_lambda = { low = 0.0, high = 0.6, step = 0.2 }\n"
                                          'normalize = { choices = ["rms", "lamp"] }')
    spec = load_tune_file(write(tmp_path, text))
    assert spec.grid == {"maps_per_step": [1, 2, 3], "flops_lambda": [0.0, 0.2, 0.4, 0.6], "normalize": ["rms", "lamp"]}
    assert spec.trials_wanted() == 3 and spec.trials_wanted(100) == 24   # the file asks 3; a grid holds 24
    assert spec.trials_text() == "3 trials of a grid of 24" and spec.trials_text(1) == "1 trial of a grid of 24"
    assert spec.trials_text(30) == "24 trials"
    random = load_tune_file(write(tmp_path, SMALL))
    assert random.trials_wanted(100) == 100                              # other samplers: as asked
    for no_grid in ("flops_lambda = { low = 0.0, high = 0.6 }", "retrain_lr = { low = 1e-4, high = 1e-2, log = true }"):
        name = no_grid.split()[0]
        with pytest.raises(FmpruneError, match=f"'params.{name}': sampler = \"grid\" needs choices, an int range"):
            stepped = "flops_lambda = { low = 0.0, high = 0.6, step = 0.2 }"
            load_tune_file(write(tmp_path, text.replace(stepped, no_grid)))


def test_the_objective_threshold_is_the_runs_floor_unless_the_file_sets_one(tmp_path):
    spec = load_tune_file(write(tmp_path))
    assert spec.settings["min_accuracy"] == 0.5 and [p.name for p in spec.params] == ["maps_per_step", "retrain"]
    searched = load_tune_file(write(tmp_path, SMALL + "min_accuracy = { low = 0.6, high = 0.9 }\n", "f.toml"))
    assert "min_accuracy" not in searched.settings


def test_objective_takes_the_last_step_before_accuracy_first_falls_under_the_bar(tmp_path):
    run = write_run(tmp_path / "run", {"scope": "all"}, [
        "0,,,,0.99,1000,800,0", "1,a,1,0.1,0.985,900,600,1", "2,a,2,0.1,0.97,800,400,2", "3,a,3,0.1,0.981,700,200,3"])
    curve = read_curve(run)
    macs = Objective("macs", 0.98)
    assert macs.best_point(curve) == (1, 600 / 800, 0.985, True)             # step 3 is back above: not counted
    assert macs.best_point(curve, final_accuracy=0.983) == (3, 200 / 800, 0.983, True)   # the final model keeps it
    assert Objective("params", 0.98).best_point(curve)[1] == 900 / 1000
    assert Objective("macs", 0.995).best_point(curve) == (0, 1.0, 0.99, False)
    assert Objective("score", 0.98).best_point(curve)[1] == pytest.approx(900 / 5.6e6 + 600 / 2.8e8)
    assert macs.describe(0.25) == "MACs x4.00 fewer (0.2500 of the base)"


def test_the_accuracy_objective_is_the_final_error_at_the_target_and_has_no_floor(tmp_path):
    run = write_run(tmp_path / "run", {"scope": "all"}, [
        "0,,,,0.99,1000,800,0", "1,a,1,0.1,0.90,900,600,1", "2,a,2,0.1,0.95,800,400,2"])
    curve = read_curve(run)
    at_target = Objective("accuracy")
    assert at_target.best_point(curve) == (2, pytest.approx(0.05), 0.95, True)     # the last step, not the best
    assert at_target.best_point(curve, final_accuracy=0.97) == (2, pytest.approx(0.03), 0.97, True)   # after tuning
    assert at_target.best_point(curve, 0.97, target_met=False) == (2, 1.0, 0.97, False)   # short of the target: worst
    assert at_target.describe(0.03) == "accuracy 97.00% at the size target"
    spec = load_tune_file(write(tmp_path, SMALL.replace('minimize = "macs"\naccuracy = 0.5', 'maximize = "accuracy"')
                                .replace("steps = 4", "target_macs = 0.9")))
    assert spec.objective == Objective("accuracy") and "min_accuracy" not in spec.settings


def test_without_optuna_tune_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)
    result = CliRunner().invoke(cli, ["tune", str(write(tmp_path)), "--out-dir", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "fmprune tune needs Optuna, which is not installed: pip install 'fmprune[tune]'" in str(result.exception)


def test_tune_runs_trials_as_run_directories_and_reports(small_ckpt, idx_dir, tmp_path):
    pytest.importorskip("optuna", reason="Optuna is an optional extra: pip install 'fmprune[tune]'")
    args = ["tune", str(write(tmp_path)), "--checkpoint", str(small_ckpt), "--data-dir", str(idx_dir),
            "--out-dir", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.count(" complete: MACs x") == 3 and "best: trial" in result.output
    import optuna
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{tmp_path / 'out' / 'small' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    for t in study.trials:   # each value is the objective computed from the trial's own run directory
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == tmp_path / "out" / "small" / "trials" / f"trial-{t.number:04d}"
        curve = read_curve(run_dir)
        assert t.value == pytest.approx(curve.macs[-1] / curve.macs[0]) and curve.finished
        assert len(curve.maps) == 5 and curve.maps[-1] == 4 * t.params["maps_per_step"]
    report = (tmp_path / "out" / "small" / "report" / "report.md").read_text()
    assert "fewest MACs at >= 50.00% validation accuracy" in report and "tune-history.png" in report
    assert "tune-importances.png" in report and report.count("| complete |") == 3
    # rerun: the study has its trials, nothing runs again
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "complete:" not in again.output and "best: trial" in again.output
    changed = CliRunner().invoke(cli, [*args[:1], str(write(tmp_path, SMALL.replace("high = 3 }", "high = 4 }"))),
                                       *args[2:]])
    assert "holds a study 'small' searched with other settings" in str(changed.exception)


# maximise accuracy at 0.85 of the MACs, by a grid over the parameter put in place of {param}
GRID = (SMALL.replace('minimize = "macs"\naccuracy = 0.5', 'maximize = "accuracy"')
        .replace("steps = 4", "target_macs = 0.85\nmaps_per_step = 2\nretrain = 2")
        .replace('sampler = "random"', 'sampler = "grid"')
        .replace('maps_per_step = { low = 1, high = 3, type = "int" }\nretrain = { low = 1, high = 3 }', "{param}"))


def test_tune_maximises_accuracy_at_a_mac_target(small_ckpt, idx_dir, tmp_path):
    """maximize = "accuracy": every trial prunes to the target, its value is its run's final
    error, and a grid over the normalisation tries each once (the recipe's choice), however
    many trials the file asks."""
    pytest.importorskip("optuna", reason="Optuna is an optional extra: pip install 'fmprune[tune]'")
    text = GRID.replace("trials = 3", "trials = 5").replace("{param}", 'normalize = { choices = ["rms", "lamp"] }')
    args = ["tune", str(write(tmp_path, text)), "--checkpoint", str(small_ckpt), "--data-dir", str(idx_dir),
            "--out-dir", str(tmp_path / "out")]
    first = CliRunner().invoke(cli, [*args, "--trials", "1"])    # half the grid: the output says so
    assert first.exit_code == 0, first.output
    assert ": 1 trial of a grid of 2, " in first.output and "(1 of the grid's 2 points complete)" in first.output
    result = CliRunner().invoke(cli, args)                       # the rest of it
    assert result.exit_code == 0, result.output
    assert result.output.count(" complete: accuracy ") == 1 and "at the size target (MACs x" in result.output
    assert ": 2 trials, " in result.output and result.output.count(" started: normalize=") == 1
    both = first.output + result.output
    assert "fewer); normalize=rms\n" in both and "fewer); normalize=lamp\n" in both, both
    again = CliRunner().invoke(cli, args)                 # the grid is done: rerunning runs nothing
    assert again.exit_code == 0 and "complete:" not in again.output, again.output
    assert "best: trial " in again.output and "of the grid's" not in again.output
    import json
    import optuna
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{tmp_path / 'out' / 'small' / 'study.db'}")
    for t in study.trials:
        summary = json.loads((Path(t.user_attrs["run_dir"]) / "summary.json").read_text())
        assert summary["stop_reason"] == "target size reached" and summary["final_macs"] <= 0.85 * summary["base_macs"]
        assert t.value == pytest.approx(1 - summary["final_accuracy"])
    assert sorted(t.params["normalize"] for t in study.trials) == ["lamp", "rms"]
    assert study.best_trial.value == min(t.value for t in study.trials)
    report = (tmp_path / "out" / "small" / "report" / "report.md").read_text()
    assert "highest validation accuracy at macs 0.85 of the base" in report
    record = json.loads((tmp_path / "out" / "small" / "tune.json").read_text())["objective"]
    assert record == {"maximize": "accuracy", "target_macs": 0.85}


def test_a_grid_point_that_makes_no_run_is_not_retried(small_ckpt, idx_dir, tmp_path):
    pytest.importorskip("optuna", reason="Optuna is an optional extra: pip install 'fmprune[tune]'")
    text = GRID.replace("{param}", 'scope = { choices = ["all", "conv9"] }')    # conv9: no such group
    args = ["tune", str(write(tmp_path, text)), "--checkpoint", str(small_ckpt), "--data-dir", str(idx_dir),
            "--out-dir", str(tmp_path / "out")]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "complete: accuracy" in first.output and "unknown group 'conv9'" in first.output
    assert "(1 of the grid's 2 points complete)" in first.output
    again = CliRunner().invoke(cli, args)                      # the failed point would fail again
    assert again.exit_code == 0 and "started:" not in again.output, again.output


def test_a_killed_grid_trial_resumes_as_its_own_point(small_ckpt, idx_dir, tmp_path):
    """A grid trial left running by a killed search is taken up again for the same point (Optuna's
    grid sampler needs the point on the queued trial), and the grid ends with both points."""
    optuna = pytest.importorskip("optuna", reason="Optuna is an optional extra: pip install 'fmprune[tune]'")
    import socket
    from fmprune.study.tune import make_sampler, open_study
    path = write(tmp_path, GRID.replace("{param}", 'normalize = { choices = ["rms", "lamp"] }'))
    storage = f"sqlite:///{tmp_path / 'out' / 'small' / 'study.db'}"
    (tmp_path / "out" / "small").mkdir(parents=True)
    study = open_study(load_tune_file(path), storage)
    killed = study.ask()                                       # the grid's first point, never finished
    killed.suggest_categorical("normalize", ["rms", "lamp"])
    killed.set_user_attr("owner", f"{socket.gethostname()}:{2 ** 22 + 4321}")   # a process that is gone
    killed.set_user_attr("run_dir", str(tmp_path / "out" / "small" / "trials" / "trial-0000"))
    args = ["tune", str(path), "--checkpoint", str(small_ckpt), "--data-dir", str(idx_dir),
            "--out-dir", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="small", storage=storage, sampler=make_sampler(load_tune_file(path)))
    done = {t.params["normalize"]: t for t in study.trials if t.state.name == "COMPLETE"}
    assert sorted(done) == ["lamp", "rms"] and len(done) == 2
    assert done[killed.params["normalize"]].user_attrs["run_dir"].endswith("trial-0000")   # its run, resumed


def test_a_pruned_trial_leaves_a_consistent_resumable_run_directory(small_ckpt, idx_dir, splits, tmp_path):
    optuna = pytest.importorskip("optuna", reason="Optuna is an optional extra: pip install 'fmprune[tune]'")
    from fmprune.study.tune import TrialContext, run_trial

    class PruneAtSixPercent(optuna.pruners.BasePruner):
        """Stops every trial once it has removed 6 % of the MACs."""

        def prune(self, study, trial):
            return max(trial.intermediate_values, default=-1) >= 6

    spec = load_tune_file(write(tmp_path, SMALL.replace("high = 3, type", "high = 2, type")))
    study = optuna.create_study(pruner=PruneAtSixPercent(), sampler=optuna.samplers.RandomSampler(seed=0))
    ctx = TrialContext(spec, str(small_ckpt), str(tmp_path / "out"), str(idx_dir))
    study.optimize(lambda t: run_trial(t, ctx), n_trials=1)
    trial = study.trials[0]
    assert trial.state.name == "PRUNED" and "accuracy" in trial.user_attrs["stopped"]
    run_dir = Path(trial.user_attrs["run_dir"])
    pruned = __import__("json").loads((run_dir / "pruned.json").read_text())
    steps = pruned["step"]
    assert 1 <= steps < 4 and pruned["reduction_percent"] >= 6
    assert len(read_curve(run_dir).maps) == steps + 1 and not (run_dir / "summary.json").exists()
    log = (run_dir / "run.log").read_text().splitlines()
    assert len(log) == steps + 1 and all("Test accuracy" in line for line in log)
    assert not [fd for fd in os.listdir("/proc/self/fd")
                if os.path.realpath(f"/proc/self/fd/{fd}") == str((run_dir / "run.log").resolve())]
    # the run goes on from where it stopped, to the same records as a run never stopped
    config = spec.config(trial.params)
    run_pruning(small_ckpt, splits, config, run_dir)
    run_pruning(small_ckpt, splits, config, tmp_path / "whole")
    assert rows(run_dir) == rows(tmp_path / "whole")
    assert (run_dir / "run.log").read_text().count("pruned: 0") == 1


KILLER = """
import os, signal, sys
import fmprune.study.tune as tune
original = tune.run_pruning

def killed_at_trial_1_step_2(*args, on_step=None, **kwargs):
    def hook(record, total):
        on_step(record, total)
        if "trial-0001" in str(args[3]) and record.step == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, on_step=hook, **kwargs)

tune.run_pruning = killed_at_trial_1_step_2
from fmprune.cli import main
sys.argv = ["fmprune", *sys.argv[1:]]
main()
"""


def test_a_killed_search_resumes_its_study_and_its_interrupted_run(small_ckpt, idx_dir, splits, tmp_path):
    pytest.importorskip("optuna", reason="Optuna is an optional extra: pip install 'fmprune[tune]'")
    args = ["tune", str(write(tmp_path)), "--checkpoint", str(small_ckpt), "--data-dir", str(idx_dir),
            "--out-dir", str(tmp_path / "out")]
    (tmp_path / "killer.py").write_text(textwrap.dedent(KILLER))
    killed = subprocess.run([sys.executable, str(tmp_path / "killer.py"), *args], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    interrupted = tmp_path / "out" / "small" / "trials" / "trial-0001"
    assert (interrupted / "state.pt").is_file() and not (interrupted / "summary.json").exists()

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    import optuna
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{tmp_path / 'out' / 'small' / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1 and states[1] == "FAIL"
    resumed = next(t for t in study.trials if t.user_attrs.get("resume_dir") == str(interrupted))
    assert resumed.params == study.trials[1].params and resumed.state.name == "COMPLETE"
    assert "Resumed at step" in (interrupted / "run.log").read_text()
    run_pruning(small_ckpt, splits, load_tune_file(write(tmp_path)).config(resumed.params), tmp_path / "whole")
    assert rows(interrupted) == rows(tmp_path / "whole")


SHIPPED = sorted((ROOT / "experiments" / "tune").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_tune_files_load(path):
    spec = load_tune_file(path)
    assert spec.params and spec.objective.metric in ("macs", "params", "score", "accuracy")


@pytest.mark.slow   # spawned workers import torch and Optuna: slow on a loaded machine; Ray covers parallel trials
def test_parallel_workers_share_one_study(small_ckpt, idx_dir, tmp_path):
    pytest.importorskip("optuna", reason="Optuna is an optional extra: pip install 'fmprune[tune]'")
    from fmprune.study.tune import TrialContext, run_tune

    spec = load_tune_file(write(tmp_path, SMALL.replace("trials = 3", "trials = 2")))
    ctx = TrialContext(spec, str(small_ckpt), str(tmp_path / "out" / "small"), str(idx_dir))
    study = run_tune(ctx, f"sqlite:///{tmp_path / 'study.db'}", workers=2)
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(finished) >= 2 and len({t.user_attrs["run_dir"] for t in finished}) == len(finished)
    assert len({tuple(sorted(t.params.items())) for t in finished}) > 1   # the workers did not draw alike
