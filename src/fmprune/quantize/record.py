"""What a quantisation run directory tells later commands: the float checkpoint it came from and
the bits it runs at, so ``fmprune score RUN_DIR`` counts the right model at the right widths."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import FmpruneError
from ..run.checkpoint import resolve_model_path

RECORD_FILE = "quantize.json"
FLOAT_BITS = 32


@dataclass(frozen=True)
class ScoreTarget:
    """The checkpoint whose parameters and MACs are counted, and the bits they are stored and
    computed at (with where those bits came from, for the printout)."""

    checkpoint: Path
    weight_bits: int
    activation_bits: int
    bits_source: str
    quantized: bool


def is_quantize_run(path: Path) -> bool:
    return path.is_dir() and (path / RECORD_FILE).is_file()


def read_quantize_record(run_dir: Path) -> ScoreTarget:
    path = run_dir / RECORD_FILE
    try:
        record = json.loads(path.read_text())
        bits = record["bits"]
        source = Path(record["source"])
        kind = f"{record['kind']} {record['config']['mode']}"
        return ScoreTarget(source, int(bits["weights"]), int(bits["activations"]),
                           f"{kind}, from {path}", True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FmpruneError(f"{path}: not a quantisation record ({type(e).__name__}: {e})") from None


def score_target(path: Path) -> ScoreTarget:
    """A quantisation run directory, a pruning run directory (its model.pt) or a checkpoint file."""
    if is_quantize_run(path):
        target = read_quantize_record(path)
        if not target.checkpoint.is_file():
            raise FmpruneError(f"{path / RECORD_FILE}: its float checkpoint {target.checkpoint} is gone")
        return target
    return ScoreTarget(resolve_model_path(path), FLOAT_BITS, FLOAT_BITS, "float checkpoint", False)
