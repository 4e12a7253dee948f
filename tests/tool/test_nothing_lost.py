"""Nothing lost: a full or read-only disk ends in one line with the old files intact and no
temporaries left; a killed sweep leaves no worker behind."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from support.entry_point import decisions, run_cli
from support.writers import WRITERS, temporaries




def one_error_line(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert lines and lines[-1].startswith("fmprune: error: "), err
    assert sum(line.startswith("fmprune: error: ") for line in lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


def contents(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def test_a_disk_full_during_re_export_keeps_the_previous_export_whole(small_ckpt, tmp_path, monkeypatch, capsys):
    out = tmp_path / "deploy"
    code, _, err = run_cli(["export", small_ckpt, "--out-dir", out, "--no-onnx"], monkeypatch, capsys)
    assert code == 0, err
    before = contents(out)
    assert {"model.pt2", "model.json"} <= set(before)
    write_bytes = Path.write_bytes

    def full_at_the_manifest(self: Path, data: bytes) -> int:
        if self.name.startswith(".model.json."):
            write_bytes(self, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_at_the_manifest)
    code, _, err = run_cli(["export", small_ckpt, "--out-dir", out, "--no-onnx"], monkeypatch, capsys)
    one_error_line(code, err, "No space left on device", "unchanged")
    assert contents(out) == before and temporaries(out) == []


def test_a_torch_write_failure_in_a_run_is_one_line_without_temporaries(small_ckpt, idx_dir, tmp_path, monkeypatch,
                                                                        capsys):
    """torch reports a full disk as a RuntimeError from its stream writer."""
    save = torch.save

    def failing(obj, f, *args, **kwargs):
        if isinstance(f, (str, Path)):
            Path(f).write_bytes(b"half")
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0 "
                               "PytorchStreamWriter failed writing file data/0: file write failed")
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing)
    run = tmp_path / "run"
    code, _, err = run_cli(["prune", "--checkpoint", small_ckpt, "--data-dir", idx_dir, "--run-dir", run,
                            "--steps", "1", "--criterion", "min_weight", "--quiet"], monkeypatch, capsys)
    one_error_line(code, err, "model.pt", "cannot write")
    assert temporaries(run) == [] and not (run / "model.pt").exists() and not (run / "summary.json").exists()


@pytest.mark.parametrize("command", list(WRITERS.values()), ids=list(WRITERS))
def test_a_read_only_output_path_is_one_line(command, small_ckpt, idx_dir, tmp_path, monkeypatch, capsys):
    """EROFS from creating the output directory (tests run as root: permissions cannot make one)."""
    read_only = tmp_path / "ro"
    mkdir = Path.mkdir

    def refuse(self: Path, *args, **kwargs):
        if self == read_only or read_only in self.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    code, _, err = run_cli(command(small_ckpt, idx_dir, read_only, tmp_path), monkeypatch, capsys)
    one_error_line(code, err, "Read-only file system", str(read_only))


def descendants(pid: int) -> set[int]:
    """Processes whose parent chain reaches ``pid`` (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def sweep_file(tmp_path: Path, checkpoint, retrain: int, steps: int | None = None) -> Path:
    experiment = tmp_path / "long.toml"
    limit = f"steps = {steps}\n" if steps else ""
    experiment.write_text(f'[experiment]\nname = "long"\ncheckpoint = "{checkpoint}"\n'
                          f'[settings]\nretrain = {retrain}\ncriterion = "min_weight"\n{limit}'
                          '[axes]\nseed = [0, 1]\n')
    return experiment


def sweep_args(experiment: Path, idx_dir, out: Path) -> list[str]:
    return [sys.executable, "-m", "fmprune", "sweep", str(experiment), "--data-dir", str(idx_dir),
            "--out-dir", str(out), "--workers", "2"]


def kill_sweep_mid_run(experiment: Path, idx_dir, out: Path) -> list[int]:
    """Start the sweep, SIGKILL it once a run has written steps, and return the pids of its
    children still alive 30 s later (killing them, so that a failing test leaves nothing running)."""
    sweep = subprocess.Popen(sweep_args(experiment, idx_dir, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and sweep.poll() is None:
        if any(len(f.read_text().splitlines()) >= 3 for f in out.rglob("steps.csv")):
            break
        time.sleep(0.2)
    assert sweep.poll() is None, "the sweep ended before it could be killed"
    children = descendants(sweep.pid)
    assert len(children) >= 2   # the workers (and the resource tracker)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(alive(p) for p in children):
        time.sleep(0.2)
    survivors = [p for p in children if alive(p)]
    for p in survivors:
        os.kill(p, signal.SIGKILL)
    return survivors


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_minus_9_of_a_sweep_leaves_no_worker(small_ckpt, idx_dir, tmp_path):
    assert kill_sweep_mid_run(sweep_file(tmp_path, small_ckpt, retrain=200), idx_dir, tmp_path / "runs") == []


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_sweep_rerun_after_kill_minus_9_equals_an_uninterrupted_sweep(small_ckpt, idx_dir, tmp_path):
    """Killed mid-run, then run again: every run's steps.csv (decisions, accuracies) equals the
    one an uninterrupted sweep writes, and no run is reported twice or lost."""
    experiment = sweep_file(tmp_path, small_ckpt, retrain=20, steps=8)
    assert kill_sweep_mid_run(experiment, idx_dir, tmp_path / "killed") == []
    for out in ("killed", "whole"):
        proc = subprocess.run(sweep_args(experiment, idx_dir, tmp_path / out), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    killed = sorted(f.parent.relative_to(tmp_path / "killed") for f in (tmp_path / "killed").rglob("summary.json"))
    whole = sorted(f.parent.relative_to(tmp_path / "whole") for f in (tmp_path / "whole").rglob("summary.json"))
    assert killed == whole and len(whole) == 2
    for run in whole:
        assert decisions(tmp_path / "killed" / run) == decisions(tmp_path / "whole" / run)
    assert temporaries(tmp_path / "killed") == []
