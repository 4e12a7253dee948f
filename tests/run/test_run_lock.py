"""One process per run directory: a second one is refused with one line naming the holder, and
the lock dies with its holder (kill -9 included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from fmprune.errors import FmpruneError
from fmprune.run.lock import LOCK_FILE, acquire, is_held, locked, release

HOLD = """
import sys, time
from fmprune.run.lock import acquire
acquire(sys.argv[1])
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path / 'run'``; killed with SIGKILL at the end."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield run_dir, proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_second_prune_on_a_held_run_directory_is_refused_naming_the_holder(holder, small_ckpt, idx_dir):
    run_dir, proc = holder
    second = subprocess.run([sys.executable, "-m", "fmprune", "prune", "--checkpoint", str(small_ckpt),
                             "--data-dir", str(idx_dir), "--run-dir", str(run_dir), "--steps", "1",
                             "--criterion", "min_weight", "--quiet"], capture_output=True, text=True)
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fmprune: error: "), second.stderr
    assert f"pid {proc.pid}" in lines[0]
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]   # nothing written


def test_the_lock_dies_with_its_holder(holder):
    run_dir, proc = holder
    with pytest.raises(FmpruneError, match=f"pid {proc.pid}"):
        acquire(run_dir)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with locked(run_dir):
        assert is_held(run_dir)
    assert not is_held(run_dir)


def test_the_lock_is_reentrant_in_one_process_and_removes_dead_temporaries(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = run_dir / ".model.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint of a killed writer")
    with locked(run_dir):
        assert not stale.exists()
        with locked(run_dir):
            pass
        assert is_held(run_dir)
    assert not is_held(run_dir)
    assert capsys.readouterr().err == f"note: {run_dir}: removed 1 temporary file(s) a killed process left\n"
    with locked(run_dir):   # nothing left: nothing said
        pass
    assert capsys.readouterr().err == ""


def test_a_refused_command_leaves_no_directory_it_created(tmp_path):
    run_dir = tmp_path / "new"
    with pytest.raises(FmpruneError):
        with locked(run_dir):
            raise FmpruneError("refused")
    assert not run_dir.exists()
    existing = tmp_path / "old"
    existing.mkdir()
    with pytest.raises(FmpruneError):
        with locked(existing):
            raise FmpruneError("refused")
    assert existing.is_dir()


def test_release_without_acquire_is_harmless(tmp_path):
    release(tmp_path)
    assert not is_held(tmp_path)
