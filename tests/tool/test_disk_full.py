"""A real full disk, and kills at random points of a re-export.

A real full disk: every writing command aimed at a 40 KB tmpfs (smaller than one checkpoint)
ends in one line, exit status 2, and leaves nothing half-written there.

Mounting needs root (CI and this machine run the tests as root); elsewhere the tests skip. The
read-only and the torch-failure cases in test_nothing_lost.py run everywhere."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from fmprune.run.lock import locked
from support.writers import WRITERS, one_run, temporaries

FULL_DISK_BYTES = 40 * 1024


def mount_tmpfs(where: Path, size: int) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"fmprune-full-{uuid.uuid4().hex[:8]}",
                           str(where)], capture_output=True)
    return proc.returncode == 0


@pytest.fixture
def full_disk(tmp_path):
    disk = tmp_path / "disk"
    if not sys.platform.startswith("linux") or not mount_tmpfs(disk, FULL_DISK_BYTES):
        pytest.skip("mounting a tmpfs needs root on Linux")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("command", list(WRITERS.values()), ids=list(WRITERS))
def test_a_full_disk_is_one_line_and_nothing_half_written(command, full_disk, small_ckpt, idx_dir, tmp_path):
    args = [str(a) for a in command(small_ckpt, idx_dir, full_disk / "out", tmp_path)]
    proc = subprocess.run([sys.executable, "-m", "fmprune", *args], capture_output=True, text=True, timeout=600)
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 0:   # everything it writes fitted: nothing to check but the temporaries
        assert temporaries(full_disk) == []
        return
    assert proc.returncode == 2, proc.stderr
    assert [line for line in lines if line.startswith("fmprune: error: ")] == lines[-1:], proc.stderr
    # a sweep's last line counts the failed runs; the run's own line in its table says why
    why = lines[-1] if args[0] != "sweep" else next((line for line in proc.stdout.splitlines()
                                                     if line.startswith("failed") and "cannot write" in line), "")
    assert "cannot write" in why and ("No space left" in why or "disk is full" in why), proc.stderr
    assert temporaries(full_disk) == []


def export_state(out: Path) -> tuple[str, int]:
    """What the manifest says (map counts) and what the program holds (parameter count)."""
    counts = json.loads((out / "model.json").read_text())["map_counts"]
    program = torch.export.load(out / "model.pt2").module()
    return json.dumps(counts, sort_keys=True), sum(t.numel() for t in program.state_dict().values())


@pytest.mark.slow
def test_kill_minus_9_at_any_point_of_a_re_export_leaves_one_whole_export(small_ckpt, idx_dir, tmp_path):
    """Export model A, then kill re-exports of model B at spread-out moments: once the directory is
    next opened, model.pt2 and model.json are both A's or both B's, and the program loads."""
    pruned = one_run(small_ckpt, idx_dir, tmp_path / "run") / "model.pt"
    out = tmp_path / "deploy"

    def export(model: Path) -> list[str]:
        return [sys.executable, "-m", "fmprune", "export", str(model), "--out-dir", str(out), "--no-onnx"]

    subprocess.run(export(pruned), check=True, capture_output=True)
    state_b = export_state(out)
    start = time.time()
    subprocess.run(export(small_ckpt), check=True, capture_output=True)
    duration = time.time() - start
    state_a = export_state(out)
    assert state_a != state_b
    outcomes = []
    for delay in sorted(random.Random(0).uniform(0.3, 1.6) * duration for _ in range(6)):
        proc = subprocess.Popen(export(pruned), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        with locked(out):   # the next user of the directory finishes an interrupted replacement
            pass
        state = export_state(out)
        assert state in (state_a, state_b)
        assert temporaries(out) == []
        outcomes.append("old" if state == state_a else "new")
        if state == state_b:   # back to A for the next kill
            subprocess.run(export(small_ckpt), check=True, capture_output=True)
    print("outcomes after kill -9:", outcomes)
