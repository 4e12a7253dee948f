"""Where fmprune keeps its cache, and file checksums."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

DAMAGED = "replace it with an intact copy"   # what to do about a corrupt or truncated file


def fmprune_home() -> Path:
    """Cache directory: ``$FMPRUNE_HOME`` or ``~/.cache/fmprune``."""
    env = os.environ.get("FMPRUNE_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fmprune"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
