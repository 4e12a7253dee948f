"""The rules every number a user gives must meet, in one place, by name.

A number reaches fmprune from a command-line option (``--retrain-lr``), an experiment or tune file
(``retrain_lr = 1e-4``) or a Python config (``PruneConfig(retrain_lr=...)``); all three spell it
the same way, so one table keyed by that name checks all three. A name not in the table must be a
finite number >= 0: NaN, infinities and negative counts, rates and seeds are never meant, and
accepting them silently turns into a run that trains on NaN or a traceback deep inside torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from .errors import FmpruneError


@dataclass(frozen=True)
class Rule:
    """A closed or open interval; ``None`` bounds are unbounded (the value is always finite)."""

    low: float | None = 0.0
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        if self.low == 0 and self.high is None:
            return "a positive number" if self.low_open else "a number >= 0"
        if self.low is None and self.high is None:
            return "a finite number"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"a fraction in {left}{self.low:g}, {self.high:g}{right}"


NON_NEGATIVE = Rule()
POSITIVE = Rule(low_open=True)
FRACTION = Rule(0.0, 1.0, low_open=True)        # a share of the model that must stay: (0, 1]
SHARE = Rule(0.0, 1.0, high_open=True)          # a share removed: [0, 1)
UNIT = Rule(0.0, 1.0)                           # an accuracy difference: [0, 1]
ANY = Rule(None)

RULES: dict[str, Rule] = {
    **dict.fromkeys(["lr", "retrain_lr", "final_tune_lr", "num_classes", "repeats", "workers", "qw", "qa",
                     "bits", "weight_bits", "activation_bits", "calibration", "eval_size", "retrain_batch",
                     "save_every", "maps_per_step", "batch_size", "epochs", "max_iters", "trials", "rounds",
                     "samples_per_image", "batches", "batch", "round_to", "latency_batch", "threads"], POSITIVE),
    **dict.fromkeys(["min_accuracy", "target_params", "target_macs", "target_latency"], FRACTION),
    **dict.fromkeys(["amount", "ratio"], SHARE),
    "max_drop": UNIT,
    "threshold": ANY,   # a raw score: its sign depends on the criterion
}


def rule_for(name: str) -> Rule:
    return RULES.get(name, NON_NEGATIVE)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_number(name: str, value: Any) -> Any:
    """``value`` if it meets ``name``'s rule; otherwise one line naming the setting and the rule.
    ``None`` (not given) and non-numbers (checked elsewhere) pass through."""
    if not is_number(value):
        return value
    rule = rule_for(name)
    if not math.isfinite(value) or not rule.holds(value):
        raise FmpruneError(f"{name.replace('_', ' ')} must be {rule.describe()}, got {value}")
    return value


def check_numbers(config: Any) -> None:
    """Every numeric field of a config dataclass (PruneConfig, SparsifyConfig, ...), by field name:
    what a TOML file sets is held to what the matching option is held to."""
    assert is_dataclass(config)
    for f in fields(config):
        check_number(f.name, getattr(config, f.name))


def _number_callback(previous: Any) -> Any:
    """A click callback: the option's own callback (if any) after :func:`check_number`."""
    import click

    def callback(ctx: "click.Context", param: "click.Parameter", value: Any) -> Any:
        values = value if isinstance(value, tuple) else (value,)
        try:
            for v in values:
                check_number(param.name or "", v)
        except FmpruneError as e:
            raise click.BadParameter(str(e), ctx, param) from None
        return previous(ctx, param, value) if previous is not None else value

    return callback


def numeric_options(group: Any) -> list[tuple[str, Any]]:
    """(command path, parameter) for every INT or FLOAT parameter (ranges included) of every
    command under ``group``."""
    import click

    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += [(f"{name} {path}", p) for path, p in numeric_options(command)]
            continue
        found += [(name, p) for p in command.params
                  if isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType))]
    return found


def check_number_options(group: Any) -> None:
    """Hold every numeric option of every command under ``group`` to :data:`RULES`; called once
    after the commands are declared, so an option added later is checked without more code."""
    for _, param in numeric_options(group):
        param.callback = _number_callback(param.callback)
