"""A real full disk: every writing command aimed at a 40 KB tmpfs (smaller than one checkpoint)
ends in one line, exit status 2, and leaves nothing half-written there.

Mounting needs root (CI and this machine run the tests as root); elsewhere the tests skip. The
read-only and the torch-failure cases in test_nothing_lost.py run everywhere."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from test_nothing_lost import WRITERS, temporaries

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
