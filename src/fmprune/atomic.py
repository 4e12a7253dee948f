"""Atomic file replacement: a reader (or a killed writer) sees the old file or the new one, never
half of one, and writers running at once (sweep workers filling the same cache) never collide.

A write that fails because the disk is full or read-only becomes one line (:class:`WriteError`)
with the temporary removed and the old file untouched; torch's writers report such failures as a
``RuntimeError`` (or abort the process from C++), so serialisers that may hit them write to memory
first (:func:`write_bytes_atomically`) and only Python writes the file."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from .errors import FmpruneError

# failures that are the disk's or the path's, not fmprune's: one line, never a traceback
WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG})
TORCH_WRITE_FAILURES = ("file write failed", "unexpected pos", "PytorchStreamWriter failed")
TEMP_GLOB = ".*.tmp"


class WriteError(FmpruneError):
    """A file could not be written (disk full, read-only, no permission); nothing half-written is left."""


def write_error_text(error: OSError) -> str:
    where = error.filename or "a file"
    return (f"{where}: cannot write ({error.strerror or error}); free space or choose a writable "
            "path: the files there before are unchanged")


def _as_write_error(error: BaseException, path: Path) -> WriteError | None:
    """The one-line error for a failed write, or None when ``error`` is not about the disk."""
    if isinstance(error, OSError) and error.errno in WRITE_ERRORS:
        if error.filename is None:
            error.filename = str(path)
        return WriteError(write_error_text(error))
    if isinstance(error, RuntimeError) and any(s in str(error) for s in TORCH_WRITE_FAILURES):
        return WriteError(f"{path}: cannot write (the disk is full or failing); free space or choose "
                          "another path: the file there before is unchanged")
    return None


def fsync_directory(directory: Path) -> None:
    """Make renames in ``directory`` durable (a power cut after the rename keeps the new name)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def temporary_beside(path: Path) -> Path:
    """A new private file ``.NAME.XXXX.tmp`` in ``path``'s directory (a rename stays on one disk)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def write_atomically(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write`` on a private temporary file beside ``path``, flush it to disk, then rename it
    over ``path``."""
    path = Path(path)
    tmp = None
    try:
        tmp = temporary_beside(path)
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        translated = _as_write_error(e, path)
        if translated is not None:
            raise translated from None
        raise
    fsync_directory(path.parent)
    return path


def write_bytes_atomically(path: Path | str, data: bytes) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_bytes(data))


JOURNAL = ".fmprune-replace.json"


def replace_together(files: dict[Path, Callable[[Path], None]]) -> list[Path]:
    """Replace several files of one directory as one change (an export's program, ONNX model and
    manifest): a reader after a kill sees all the old files or, once the directory is next opened
    (:func:`finish_replacements`), all the new ones.

    Every file is written to its temporary and flushed first; a failure or a kill then leaves every
    old file as it was. Only when all are on disk is a journal of the renames written (atomically);
    the renames follow, in the order given, and the journal goes. A kill among the renames leaves
    the journal, and whoever opens the directory next completes them from the flushed temporaries.
    The journal's name is fixed: call it holding the directory's lock (:mod:`fmprune.run.lock`)."""
    temporaries: dict[Path, Path] = {}
    try:
        for path, write in files.items():
            temporaries[path] = tmp = temporary_beside(path)
            write(tmp)
            fsync_file(tmp)
    except BaseException as e:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
        translated = _as_write_error(e, next(reversed(temporaries), Path(".")))
        if translated is not None:
            raise translated from None
        raise
    if not temporaries:
        return []
    directory = next(iter(temporaries)).parent
    if any(path.parent != directory for path in temporaries):
        raise ValueError("replace_together: every file must be in one directory")
    journal = directory / JOURNAL
    try:
        write_bytes_atomically(journal, json.dumps(
            [[tmp.name, path.name] for path, tmp in temporaries.items()]).encode())
    except BaseException:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
        raise
    _rename_journaled(directory)
    return list(temporaries)


def finish_replacements(directory: Path) -> bool:
    """Complete the renames of a :func:`replace_together` killed among them (its journal is still
    in ``directory``); True if there was one. Call it holding the directory's lock, before
    :func:`remove_stale_temporaries` (the journal's temporaries are not stale)."""
    if not (directory / JOURNAL).is_file():
        return False
    _rename_journaled(directory)
    return True


def _rename_journaled(directory: Path) -> None:
    journal = directory / JOURNAL
    try:
        pairs = json.loads(journal.read_text())
    except (OSError, ValueError):
        journal.unlink(missing_ok=True)   # a torn journal is never renamed over: it was written atomically
        return
    for tmp_name, name in pairs:
        tmp = directory / tmp_name
        if tmp.exists():   # renamed already before a kill: nothing left to do for this one
            os.replace(tmp, directory / name)
    fsync_directory(directory)
    journal.unlink(missing_ok=True)
    fsync_directory(directory)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files a killed writer left in ``directory``. Only call this while
    holding the directory's lock (:mod:`fmprune.run.lock`): then no live writer owns them."""
    removed = []
    for tmp in _temporaries(directory):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _temporaries(directory: Path) -> Iterable[Path]:
    return (p for p in directory.glob(TEMP_GLOB) if p.is_file())
