"""Atomic writes: a failed writer keeps the old file; writers at once never collide."""

import subprocess
import sys
import threading

import pytest

from fmprune.atomic import JOURNAL, replace_together, write_atomically
from fmprune.run.lock import locked


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "cache.pt"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomically(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.pt"]


def test_concurrent_writers_of_one_file_both_succeed(tmp_path):
    """Both writers are inside ``write`` at once (the sweep workers' cache race)."""
    target, barrier, errors = tmp_path / "splits.pt", threading.Barrier(2), []

    def writer(text):
        def write(tmp):
            tmp.write_text(text)
            barrier.wait(timeout=10)
        try:
            write_atomically(target, write)
        except Exception as e:   # collected: an exception in a thread would not fail the test
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_text() in ("a", "b")
    assert [p.name for p in tmp_path.iterdir()] == ["splits.pt"]


KILL_AMONG_RENAMES = r"""
import os, signal, sys
from pathlib import Path
from fmprune import atomic
d = Path(sys.argv[1])
real = os.replace
calls = []
def replace_then_die(src, dst):
    real(src, dst)
    calls.append(dst)
    if len(calls) == 2 and Path(dst).name == "a.bin":   # the journal first, then one export file
        os.kill(os.getpid(), signal.SIGKILL)
atomic.os.replace = replace_then_die
atomic.replace_together({d / name: (lambda tmp, name=name: tmp.write_text("new " + name))
                         for name in ("a.bin", "b.bin", "m.json")})
"""


def test_a_kill_among_the_renames_of_a_replacement_is_completed_when_the_directory_is_next_opened(tmp_path, capsys):
    """kill -9 after the first of three renames: the next lock holder finishes the other two from
    the journal, so the directory never keeps a new program beside an old manifest."""
    for name in ("a.bin", "b.bin", "m.json"):
        (tmp_path / name).write_text("old " + name)
    proc = subprocess.run([sys.executable, "-c", KILL_AMONG_RENAMES, str(tmp_path)])
    assert proc.returncode == -9
    assert (tmp_path / JOURNAL).exists()
    assert [(tmp_path / n).read_text() for n in ("a.bin", "b.bin", "m.json")] == ["new a.bin", "old b.bin", "old m.json"]
    with locked(tmp_path):
        pass
    assert "completed the file replacement a killed process had begun" in capsys.readouterr().err
    assert [(tmp_path / n).read_text() for n in ("a.bin", "b.bin", "m.json")] == ["new a.bin", "new b.bin", "new m.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".fmprune.lock", "a.bin", "b.bin", "m.json"]


def test_a_kill_before_the_journal_leaves_every_old_file(tmp_path):
    """Killed while the temporaries are written (no journal yet): the old files stay and the next
    lock holder deletes the temporaries."""
    (tmp_path / "a.bin").write_text("old")

    def dies(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_together({tmp_path / "a.bin": dies})
    assert (tmp_path / "a.bin").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    with locked(tmp_path):
        pass
    assert (tmp_path / "a.bin").read_text() == "old"
