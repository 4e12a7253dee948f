"""Sweeps on Ray: the same run directories, rows and resumption as the local process pool."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fmprune.cli import cli
from fmprune.errors import FmpruneError
from fmprune.run.loop import run_pruning
from fmprune.study.experiments import load_experiment
from fmprune.study.ray_runner import check_device, require_ray, run_sweep_ray
from fmprune.study.resources import Resources
from fmprune.study.sweep import run_sweep
from support.tensorboard_events import read_scalars

SWEEP = """
[experiment]
name = "on-ray"
[settings]
steps = 3
retrain = 2
calibration = 100
eval_size = 200
save_every = 1
[axes]
criterion = ["random", "taylor"]
[resources]
cpus = 1
"""


def rows(run_dir: Path) -> list[dict]:
    """steps.csv without its wall-clock column: everything a run decided and measured."""
    with open(run_dir / "steps.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_without_ray_the_option_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` now fails as if not installed
    with pytest.raises(FmpruneError, match=r"--ray needs Ray, which is not installed: pip install 'fmprune\[ray\]'"):
        require_ray()
    (tmp_path / "e.toml").write_text(SWEEP)
    result = CliRunner().invoke(cli, ["sweep", str(tmp_path / "e.toml"), "--ray", "--out-dir", str(tmp_path / "o")])
    assert result.exit_code != 0 and "pip install 'fmprune[ray]'" in str(result.exception or result.output)


@pytest.mark.parametrize("device, resources, message", [
    ("cuda:1", Resources(), "pass --device cuda, Ray picks"),
    ("cuda", Resources(cpus=1, gpus=0), r"needs GPUs per run .* gpus = 1"),
    ("cpu", Resources(cpus=1, gpus=0.5), "pass --device cuda, or remove 'gpus'"),
])
def test_devices_that_contradict_ray_gpu_assignment_are_refused(device, resources, message):
    with pytest.raises(FmpruneError, match=message):
        check_device(device, resources)


@pytest.mark.parametrize("table, message", [
    ("cpus = -1", r"'resources.cpus' = -1 should be a number >= 0"),
    ("gpu = 1", r"unknown key 'resources.gpu' \(known: cpus, gpus\)"),
    ("cpus = 0", "needs 'resources.cpus' or 'resources.gpus' above 0"),
    ("gpus = 1.5", "must be a fraction under 1 or a whole number"),
])
def test_bad_resources_tables_name_the_key(tmp_path, table, message):
    (tmp_path / "e.toml").write_text(SWEEP.replace("cpus = 1", table))
    with pytest.raises(FmpruneError, match=message):
        load_experiment(tmp_path / "e.toml")


def test_resources_default_to_one_cpu_and_fractions_of_a_gpu_are_kept(tmp_path):
    (tmp_path / "e.toml").write_text(SWEEP.replace("cpus = 1", "cpus = 2\ngpus = 0.25"))
    assert load_experiment(tmp_path / "e.toml").resources == Resources(cpus=2.0, gpus=0.25)
    (tmp_path / "f.toml").write_text(SWEEP.replace("[resources]\ncpus = 1", ""))
    assert load_experiment(tmp_path / "f.toml").resources == Resources()


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for the module: the runner uses a Ray already started and
    leaves it running (starting one takes seconds)."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'fmprune[ray]'")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_sweep_equals_the_local_runner_and_resumes(local_ray, small_ckpt, idx_dir, splits, tmp_path):
    path = tmp_path / "e.toml"
    path.write_text(SWEEP)
    local = run_sweep(load_experiment(path), str(small_ckpt), tmp_path / "local", str(idx_dir), workers=2)
    assert sorted(o.status for o in local) == ["done", "done"]

    # the command line, on a local Ray with 2 CPUs
    args = ["sweep", str(path), "--ray", "--workers", "2", "--checkpoint", str(small_ckpt),
            "--data-dir", str(idx_dir), "--out-dir", str(tmp_path / "ray")]
    pytest.importorskip("tensorboard")   # the runs also log their steps from inside the Ray tasks
    events = tmp_path / "tb"
    result = CliRunner().invoke(cli, args + ["--tensorboard", str(events)])
    assert result.exit_code == 0, result.output
    assert "2 of 2 runs finished" in result.output
    for label in ("random", "taylor"):
        on_ray, locally = tmp_path / "ray" / "on-ray" / label, tmp_path / "local" / "on-ray" / label
        assert rows(on_ray) == rows(locally) and len(rows(on_ray)) == 4
        logged = read_scalars(events / "on-ray" / label)["prune/params"]   # written by the Ray task
        assert [int(v) for _, v in logged] == [int(r["params"]) for r in rows(on_ray)]
        assert (on_ray / "summary.json").is_file() and not (on_ray / "state.pt").exists()
    assert (tmp_path / "ray" / "on-ray" / "experiment.json").is_file()

    # a run killed at its second step (its state saved after the first) resumes; the other is skipped
    taylor = tmp_path / "ray" / "on-ray" / "taylor"
    shutil.rmtree(taylor)
    config = dict(load_experiment(path).runs)["taylor"]

    def killed(record, total):
        if record.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pruning(small_ckpt, splits, config, taylor, on_step=killed)
    assert len(rows(taylor)) == 3 and (taylor / "state.pt").is_file()
    outcomes = run_sweep_ray(load_experiment(path), str(small_ckpt), tmp_path / "ray", str(idx_dir), workers=2)
    assert {o.label: o.status for o in outcomes} == {"random": "skipped", "taylor": "done"}
    assert rows(taylor) == rows(tmp_path / "local" / "on-ray" / "taylor")
    assert "Resumed at step 1" in (taylor / "run.log").read_text()


def test_tune_trials_run_as_ray_tasks(local_ray, small_ckpt, idx_dir, tmp_path):
    pytest.importorskip("optuna", reason="Optuna is an optional extra: pip install 'fmprune[tune]'")
    from fmprune.study.tune import TrialContext, run_tune
    from fmprune.study.tune_spec import load_tune_file

    (tmp_path / "t.toml").write_text("""
[study]
name = "on-ray"
trials = 2
sampler = "random"
pruner = "none"
[objective]
minimize = "params"
accuracy = 0.5
[settings]
steps = 2
calibration = 100
eval_size = 200
[params]
maps_per_step = { low = 1, high = 4, type = "int" }
""")
    spec = load_tune_file(tmp_path / "t.toml")
    ctx = TrialContext(spec, str(small_ckpt), str(tmp_path / "out" / "on-ray"), str(idx_dir))
    study = run_tune(ctx, f"sqlite:///{tmp_path / 'study.db'}", workers=2, ray_address="local")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) >= 2 and all(Path(t.user_attrs["run_dir"], "summary.json").is_file() for t in done)
    assert local_ray.is_initialized()   # a Ray the caller started is left running
