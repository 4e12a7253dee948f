"""A misspelt --ignore name and an unwritable run.log are one line each, not silently accepted or
a logging traceback."""

from __future__ import annotations

import errno

import pytest
import torch

import fmprune
from fmprune.errors import PruningError
from fmprune.models.lenet import LeNet
from fmprune.run.rundir import RunDirectory


def test_ignore_names_must_exist():
    with pytest.raises(PruningError, match="no module or graph node named 'nosuchlayer'"):
        fmprune.trace(LeNet(), torch.zeros(1, 1, 28, 28), ignore=["nosuchlayer"])
    graph = fmprune.trace(LeNet(), torch.zeros(1, 1, 28, 28), ignore=["fc2", "conv1"])
    assert "conv1" not in graph.names


class FullDisk:
    """A stream whose writes fail as on a full disk."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_failed_run_log_write_raises(tmp_path):
    log = RunDirectory(tmp_path / "r").logger()
    log.handlers[0].stream = FullDisk()
    with pytest.raises(OSError, match="No space left"):
        log.info("step 1")
