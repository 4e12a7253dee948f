"""Command line: a thin layer of flags, progress bars and friendly errors over the Python API.

One module per command family; options several commands share live in :mod:`.options`; the
group and the entry point (``fmprune = "fmprune.cli:main"``) in :mod:`.app`. A new command is a
function in one of these modules and one line in :data:`COMMANDS`."""

from __future__ import annotations

from ..validate import check_number_options
from .app import cli, main
from .baselines import oneshot_cmd, sensitivity_cmd
from .data import data_group
from .deploy import compare_cmd, export_cmd, quantize_cmd, score_cmd
from .latency import latency_table_cmd
from .models import count_cmd, criteria_cmd, models_cmd
from .prune import prune_cmd
from .sparsify import sparsify_cmd
from .study import rank_quality_cmd, report_cmd, sweep_cmd, tune_cmd
from .train import train_cmd

COMMANDS = (data_group, models_cmd, criteria_cmd, count_cmd, train_cmd, prune_cmd, compare_cmd, export_cmd,
            sweep_cmd, report_cmd, score_cmd, quantize_cmd, sparsify_cmd, tune_cmd, sensitivity_cmd, oneshot_cmd,
            rank_quality_cmd, latency_table_cmd)
for command in COMMANDS:
    cli.add_command(command)
check_number_options(cli)   # every numeric option of every command: finite, sign, range

__all__ = ["cli", "main", "COMMANDS"]
