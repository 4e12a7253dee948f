"""User-facing errors: one clear line, no traceback, non-zero exit from the CLI."""


class FmpruneError(Exception):
    """A problem with the user's input (files, names, targets) rather than a bug."""


class DataError(FmpruneError):
    """A data file is missing, corrupt or inconsistent."""


class CheckpointError(FmpruneError):
    """A checkpoint cannot be read or does not fit the requested use."""


class TopologyError(FmpruneError):
    """A model contains an operation the tracer cannot follow for pruning."""


class PruningError(FmpruneError):
    """An impossible pruning request (unknown layer, last map, bad target)."""
