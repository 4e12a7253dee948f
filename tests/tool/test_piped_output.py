"""Every writing command piped to a file (``fmprune ... > log 2>&1``) writes whole lines: no
carriage returns, no cursor moves, whatever bars it shows on a terminal."""

from __future__ import annotations

import subprocess
import sys

import pytest

from support.writers import WRITERS


@pytest.mark.slow
@pytest.mark.parametrize("command", list(WRITERS.values()), ids=list(WRITERS))
def test_a_piped_command_writes_no_redraws(command, small_ckpt, idx_dir, tmp_path):
    (tmp_path / "side").mkdir()
    args = [str(a) for a in command(small_ckpt, idx_dir, tmp_path / "out", tmp_path / "side") if a != "--quiet"]
    done = subprocess.run([sys.executable, "-m", "fmprune", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900)
    assert done.returncode == 0, done.stdout
    assert "\r" not in done.stdout and "\x1b[" not in done.stdout, done.stdout[:2000]
