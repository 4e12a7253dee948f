"""fmprune as a user runs it: through ``python -m fmprune`` (a real process) or ``fmprune.cli:main``
in this process (fast), and the checks every command-line test makes of what it printed."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

from fmprune.cli import main


def fmprune(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "fmprune", *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"fmprune {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


def kill_minus_9_after(args, run_dir, steps: int, timeout: float) -> None:
    """``fmprune ARGS --run-dir RUN_DIR`` killed with SIGKILL once steps.csv holds ``steps`` steps
    after the base row (fails if the run ends first); the run must then be unfinished."""
    proc = subprocess.Popen([sys.executable, "-m", "fmprune", *map(str, args), "--run-dir", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = run_dir / "steps.csv"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if rows.exists() and len(rows.read_text().splitlines()) >= steps + 2:   # header, step 0, the steps
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.json").exists()


def decisions(run_dir):
    """steps.csv without its wall-clock column: everything a run decided and measured."""
    with open(run_dir / "steps.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def assert_user_error(proc, *fragments):
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fmprune: error: "), proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def run_cli(args: list, monkeypatch, capsys) -> tuple[int, str, str]:
    """``fmprune ARGS`` in this process (fast; same code path as the console script)."""
    monkeypatch.setattr(sys, "argv", ["fmprune", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err
