"""Atomic writes: a failed writer keeps the old file; writers at once never collide."""

import threading

import pytest

from fmprune.atomic import write_atomically


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
