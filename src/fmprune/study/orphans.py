"""Worker processes that cannot outlive the process that started them.

A sweep killed with SIGKILL runs no cleanup: without this its pool workers keep pruning (and
holding their run directories) forever, and a rerun races them. On Linux the kernel kills the
worker when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere a daemon thread
notices the parent is gone within a second. The resource tracker multiprocessing starts exits by
itself once the parent and every worker (the holders of its pipe) are gone."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
POLL_SECONDS = 1.0


def _set_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    os._exit(1)


def die_with_parent(parent: int) -> None:
    """Make this process end when ``parent`` (the pid that started it) ends, however it ends.
    Call first thing in a pool worker's initializer."""
    if not _set_parent_death_signal():
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()
    if os.getppid() != parent:   # the parent died before the signal was armed
        os._exit(1)
