"""User-facing errors: one clear line, no traceback, non-zero exit from the CLI."""


class FmpruneError(Exception):
    """A problem with the user's input (files, names, targets) rather than a bug."""


class DataError(FmpruneError):
    """A data file is missing, corrupt or inconsistent."""


class CheckpointError(FmpruneError):
    """A checkpoint cannot be read or does not fit the requested use."""


class UnsupportedModelError(FmpruneError):
    """The model contains something fmprune cannot prune safely; raised by ``trace`` before any
    change, naming the graph node, the op or module type, and what the user can do."""


TopologyError = UnsupportedModelError   # the chain tracer's name for the same problem


class PruningError(FmpruneError):
    """An impossible pruning request (unknown group, last map, bad target)."""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message ("" for none): what a one-line error quotes of an
    exception raised in the user's code or deep inside torch."""
    return (str(error).strip().splitlines() or [""])[0]
