"""Run directories as the pruning loop writes them, for tests of what reads them (reports, sweep
summaries, tuning objectives) without running a pruning."""

from __future__ import annotations

import json
from pathlib import Path

from fmprune.run.rundir import STEP_FIELDS

STEPS_HEADER = ",".join(STEP_FIELDS)   # the loop's own columns: a fake follows if they change


def write_run(run: Path, config: dict, rows: list[str]) -> Path:
    """``run``/config.json from ``config`` and ``run``/steps.csv: the loop's header, then ``rows``
    (one "step,layer,map,score,accuracy,params,macs,seconds" line each; step 0 is the base)."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(config))
    (run / "steps.csv").write_text("\n".join([STEPS_HEADER, *rows]) + "\n")
    return run
