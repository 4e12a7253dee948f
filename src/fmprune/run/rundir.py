"""Run directories: what one pruning run leaves behind, written so a crash loses nothing.

``config.json`` (the configuration as run), ``run.log`` (one line per step in the seed project's
format), ``steps.csv`` (one row per removed map), ``model.pt`` (the compact model),
``summary.json``, and ``state.pt`` (everything needed to resume).

Every run method (:mod:`.method`) keeps its directory by the same rules, held here: a directory
is claimed for one method (:func:`claimed`), holds one configuration from one base checkpoint
(:func:`held_config`), and its ``config.json`` carries the same stamps (:func:`run_stamp`)."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Iterator

import torch

from ..atomic import write_atomically
from ..data import sha256_file
from ..devices import device_description
from ..errors import FmpruneError
from ..version import __version__
from .checkpoint import Checkpoint
from .lock import locked

STEP_FIELDS = ["step", "layer", "map", "score", "accuracy", "params", "macs", "seconds"]


def write_json_atomic(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_summary(cls: type, path: Path) -> Any:
    """A summary dataclass from its ``summary.json`` (derived values such as ``compression``,
    written beside the fields, are left out): what a finished run reports when run again."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in read_json(path).items() if k in names})


QUANTIZE_RECORD = "quantize.json"   # what `fmprune quantize` leaves instead of config.json
PRUNE_KIND = "prune"   # a map-by-map pruning run's config.json has no "kind": its files predate the other methods


def recorded_method(path: Path) -> str | None:
    """Which command wrote the run directory ``path`` (prune, oneshot, sparsify, quantize), or
    None for a new or empty one; a pruning run's config.json has no "kind"."""
    if (path / QUANTIZE_RECORD).is_file():
        return "quantize"
    if (path / "config.json").is_file():
        try:
            return str(read_json(path / "config.json").get("kind", PRUNE_KIND))
        except (OSError, ValueError, AttributeError):
            return "unknown"
    return None


@contextlib.contextmanager
def claimed(path: Path | str, method: str) -> Iterator[Path]:
    """Hold the run directory ``path`` for ``method`` for the block: no other process writes it
    meanwhile (:mod:`.lock`), and a directory another command wrote is refused before anything
    of it changes (a quantisation would otherwise mix its files into a pruning run)."""
    path = Path(path)
    with locked(path):
        found = recorded_method(path)
        if found is not None and found != method:
            raise FmpruneError(f"{path}: holds a {found} run, not a {method} run; use another --run-dir")
        yield path


def base_sha256(base_path: str) -> str:
    """The base checkpoint's sha256 ("" for a model that is not a file), stamped on every run."""
    return sha256_file(Path(base_path)) if Path(base_path).is_file() else ""


def held_config(path: Path | str, kind: str, config: Any, base_sha: str) -> dict | None:
    """The ``config.json`` of the run directory ``path`` when it holds this very run (same
    method, configuration and base checkpoint): run again, it resumes or reports its result.
    None for a directory without one; any other run is refused in one line, before anything
    of it changes. A setting the directory's config.json lacks was added to fmprune after the
    run began: at its default it is the same run (the default keeps the old behaviour)."""
    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        return None
    previous = read_json(config_path)
    wanted = config.to_dict()
    defaults = field_defaults(config)
    stored = {k: previous[k] if k in previous else defaults.get(k, _ABSENT) for k in wanted}
    if previous.get("kind", PRUNE_KIND) != kind or stored != wanted:
        raise FmpruneError(f"{path}: holds a run with a different configuration; use another --run-dir")
    if previous.get("base_checkpoint_sha256", base_sha) != base_sha:
        raise FmpruneError(f"{path}: holds a run from another base checkpoint "
                           f"(sha256 {previous['base_checkpoint_sha256'][:12]}…, now {base_sha[:12]}…); "
                           "use another --run-dir")
    return previous


_ABSENT = object()


def field_defaults(config: Any) -> dict:
    """Each field's default as ``config.json`` holds it (tuples as lists)."""
    return {f.name: json.loads(json.dumps(f.default, default=list)) for f in fields(config)
            if f.default is not MISSING}


def run_stamp(kind: str, base: Checkpoint, base_path: str, base_sha: str, device: torch.device) -> dict:
    """What ``config.json`` records beside the configuration, for every method: the method and
    model (left out for map-by-map pruning, whose directories predate them), the base checkpoint
    and its sha256, the data fingerprint, the fmprune and torch versions and the device."""
    named = {} if kind == PRUNE_KIND else {"kind": kind, "model": base.spec.describe()}
    return {**named, "base_checkpoint": base_path, "base_checkpoint_sha256": base_sha,
            "data_fingerprint": base.data_fingerprint, "fmprune_version": __version__,
            "torch_version": torch.__version__, "device": device_description(device)}


class RunLogHandler(logging.FileHandler):
    """``run.log``'s handler. logging's own handlers print a traceback for a failed write (a full
    disk) and go on; a run log that cannot be written must stop the run with one line instead,
    so the error is raised to the caller (the CLI turns an OSError into one line)."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        raise


SUMMARY_FILE = "summary.json"   # written last: its presence means the run finished


class RunDirectory:
    """One run's directory and its append-only records."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise FmpruneError(f"{self.path}: exists and is not a directory; choose another run directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._logger: logging.Logger | None = None

    # -- files
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def steps_path(self) -> Path:
        return self.path / "steps.csv"

    @property
    def log_path(self) -> Path:
        return self.path / "run.log"

    @property
    def model_path(self) -> Path:
        return self.path / "model.pt"

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def state_path(self) -> Path:
        return self.path / "state.pt"

    # -- records
    def logger(self) -> logging.Logger:
        """A logger writing ``[pid] 2018-01-11 11:55:45,695 INFO ...`` lines to ``run.log``."""
        if self._logger is None:
            logger = logging.getLogger(f"fmprune.run.{self.path.resolve()}")
            logger.setLevel(logging.INFO)
            logger.propagate = False
            handler = RunLogHandler(self.log_path)
            handler.setFormatter(logging.Formatter("[%(process)d] %(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(handler)
            self._logger = logger
        return self._logger

    def close(self) -> None:
        if self._logger is not None:
            for h in list(self._logger.handlers):
                h.close()
                self._logger.removeHandler(h)
            self._logger = None

    def append_steps(self, rows: list[dict]) -> None:
        """Append rows and flush them to disk before the step counts as done."""
        new = not self.steps_path.exists() or self.steps_path.stat().st_size == 0
        with open(self.steps_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=STEP_FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())

    def read_steps(self) -> list[dict]:
        if not self.steps_path.exists():
            return []
        with open(self.steps_path, newline="") as f:
            return list(csv.DictReader(f))

    def record_sizes(self) -> dict[str, int]:
        """Bytes of ``steps.csv`` and ``run.log`` now (both are flushed after every record)."""
        for h in (self._logger.handlers if self._logger else []):
            h.flush()
        return {p.name: p.stat().st_size if p.exists() else 0 for p in (self.steps_path, self.log_path)}

    def truncate_records(self, sizes: dict[str, int]) -> None:
        """Cut ``steps.csv`` and ``run.log`` back to ``sizes``: what a killed run wrote after its
        last saved state (possibly a half-written line) goes; the resumed run writes it again."""
        for p in (self.steps_path, self.log_path):
            if p.exists() and p.stat().st_size > sizes.get(p.name, 0):
                with open(p, "r+b") as f:
                    f.truncate(sizes.get(p.name, 0))
