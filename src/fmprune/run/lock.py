"""One writer per run directory: an exclusive ``flock`` on ``.fmprune.lock`` inside it.

Two processes writing one run directory interleave ``steps.csv`` and overwrite each other's
model; the lock makes the second one stop with one line naming the first one's pid. The kernel
releases the lock when its holder dies however it dies (kill -9 included), so a stale lock never
needs a manual delete, and whoever takes the lock next may delete the temporaries a killed writer
left behind (no live writer can own them). Within one process the lock is re-entrant (a sweep
worker's run and its follow-up steps, the tests calling the CLI in-process)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..atomic import finish_replacements, remove_stale_temporaries
from ..errors import FmpruneError

LOCK_FILE = ".fmprune.lock"


class RunDirectoryBusy(FmpruneError):
    """Another live process holds the run directory."""


@dataclass
class _Held:
    fd: int
    count: int
    created: bool   # this process made the directory: it goes again if the command is refused


_HELD: dict[Path, _Held] = {}


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _holder(fd: int) -> str:
    """The pid the holder wrote into the lock file ("unknown" in the instant before it writes)."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return text if text.isdigit() else "unknown"


def _open_locked(path: Path) -> int:
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder(fd)
        os.close(fd)
        raise RunDirectoryBusy(f"{path}: in use by another fmprune process (pid {pid}); wait for it to "
                               "finish or stop it, or use another directory") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def acquire(path: Path | str) -> None:
    """Create ``path`` if needed and hold its lock (again, if this process holds it already)."""
    path = Path(path)
    held = _HELD.get(_key(path))
    if held is not None:
        held.count += 1
        return
    if path.exists() and not path.is_dir():
        raise FmpruneError(f"{path}: exists and is not a directory; choose another path")
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        fd = _open_locked(path)
    except BaseException:
        if created:
            _remove_if_empty(path)
        raise
    _HELD[_key(path)] = _Held(fd, 1, created)
    # what a killed writer left: said once, on stderr, so that a rerun after kill -9 is not silent
    if finish_replacements(path):
        print(f"note: {path}: completed the file replacement a killed process had begun", file=sys.stderr)
    removed = remove_stale_temporaries(path)
    if removed:
        print(f"note: {path}: removed {len(removed)} temporary file(s) a killed process left", file=sys.stderr)


def release(path: Path | str, refused: bool = False) -> None:
    """Drop one hold; the last one unlocks. ``refused``: the command failed, so a directory it
    created that holds nothing but the lock goes too (a refused run leaves no empty directory)."""
    path = Path(path)
    held = _HELD.get(_key(path))
    if held is None:
        return
    held.count -= 1
    if held.count:
        return
    del _HELD[_key(path)]
    if refused and held.created:
        _remove_if_empty(path)
    os.close(held.fd)


def _remove_if_empty(path: Path) -> None:
    """Remove ``path`` when nothing but the lock file (and dead temporaries) is in it."""
    try:
        if all(p.name == LOCK_FILE or p.name.endswith(".tmp") for p in path.iterdir()):
            for p in path.iterdir():
                p.unlink(missing_ok=True)
            path.rmdir()
    except OSError:
        pass


def is_held(path: Path | str) -> bool:
    return _key(Path(path)) in _HELD


@contextlib.contextmanager
def locked(path: Path | str) -> Iterator[Path]:
    """Hold ``path``'s lock for the block; a failing block leaves no directory it created empty."""
    acquire(path)
    try:
        yield Path(path)
    except BaseException:
        release(path, refused=True)
        raise
    release(path)
