"""Atomic file replacement: a reader (or a killed writer) sees the old file or the new one, never
half of one, and writers running at once (sweep workers filling the same cache) never collide."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def write_atomically(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write`` on a private temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
