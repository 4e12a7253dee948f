"""Progress written to a file or a pipe is plain lines: no carriage returns, no cursor moves."""

from __future__ import annotations

import io
import subprocess
import sys

from fmprune.progress import PlainProgress, progress


def test_plain_progress_prints_a_line_per_tenth_and_one_at_the_end():
    out = io.StringIO()
    with progress(total=100, desc="train", unit="it", file=out) as bar:
        assert isinstance(bar, PlainProgress)
        for _ in range(95):
            bar.update(1)
        bar.set_postfix(acc="0.9", refresh=False)
    lines = out.getvalue().splitlines()
    assert lines[0] == "train: 10/100 it" and lines[-1] == "train: 95/100 it (acc=0.9)"
    assert len(lines) == 10 and "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_a_piped_training_command_writes_no_redraws(tmp_path, idx_dir):
    """`fmprune train ... > log 2>&1`: progress as whole lines, no carriage returns or cursor moves."""
    done = subprocess.run([sys.executable, "-m", "fmprune", "train", "--data-dir", str(idx_dir), "--max-iters", "10",
                           "--batch-size", "20", "--out", str(tmp_path / "m.pt")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert done.returncode == 0, done.stdout
    assert "\r" not in done.stdout and "\x1b[" not in done.stdout
    assert "epochs: 1/1" in done.stdout


def test_plain_progress_resets_like_tqdm():
    out = io.StringIO()
    bar = progress(total=2, desc="iters", file=out)
    bar.update(2)
    bar.reset(total=3)
    bar.update(3)
    bar.close()
    assert out.getvalue().splitlines() == ["iters: 2/2 it", "iters: 3/3 it"]
