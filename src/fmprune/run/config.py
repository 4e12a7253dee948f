"""The configuration of a pruning run: everything that decides its results (``config.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..distillation import check_distillation
from ..criteria import NORMALIZATIONS, REDUCTIONS, check_cost, create_criterion
from ..errors import FmpruneError
from ..runtimes import RUNTIMES, channel_multiple
from ..timing import CLOCKS
from ..validate import check_numbers

EVAL_SPLITS = ("val", "test")


@dataclass(frozen=True)
class PruneConfig:
    """Everything that decides a pruning run's results (saved as ``config.json``)."""

    criterion: str = "taylor"
    normalize: str = "rms"                # per-group normalisation (rms: see criteria.scoring.normalize)
    flops_lambda: float = 0.0
    scope: str = "all"
    steps: int | None = None             # None: until every scope layer is down to one map
    maps_per_step: float = 1             # an integer count, or a fraction (< 1) of maps left in scope
    calibration: int = 1000              # training images the criterion is computed on
    eval_split: str = "val"
    eval_size: int | None = None         # None: the whole split
    seed: int = 0
    retrain: int = 0                     # minibatch updates after each step (0: no retraining)
    retrain_only_pruned_layer: bool = False
    retrain_lr: float = 1e-4
    retrain_batch: int = 100
    rank_once: bool = False
    group_reduction: str = "sum"         # how a group's producers combine their scores: sum, mean, max
    per_cost: str = "none"               # divide scores by the MACs/params a removal saves: none, macs, params
    ignore: tuple[str, ...] = ()         # modules/nodes kept as they are (their maps are never removed)
    min_accuracy: float | None = None
    target_params: float | None = None   # stop once params <= this fraction of the base model
    target_macs: float | None = None
    target_latency: float | None = None  # stop once the predicted latency <= this fraction of the base's
    latency_lambda: float = 0.0          # the latency term: score − λ·(ms one removal saves), from the table
    latency_runtime: str = "eager"       # the latency table's runtime, batch, device and clock
    latency_batch: int = 1
    latency_device: str = "cpu"
    latency_clock: str = "wall"
    round_to: int | None = None          # every group's size stays a multiple of it (or its original size); see rounding
    save_every: int = 10                 # steps between resume states (retraining runs)
    final_tune: int = 0                  # iterations of one-cycle Adam after the last step
    final_tune_lr: float = 1e-3          # its peak learning rate
    distill: float = 0.0                 # retraining and final tuning learn from the unpruned model's output
    distill_temperature: float = 4.0     # with this weight and temperature (fmprune.distillation; 0: labels only)

    def __post_init__(self) -> None:
        check_numbers(self)
        create_criterion(self.criterion)
        if self.normalize not in NORMALIZATIONS:
            raise FmpruneError(f"unknown normalisation {self.normalize!r} (available: {', '.join(NORMALIZATIONS)})")
        check_cost(self.per_cost)
        if self.group_reduction not in REDUCTIONS:
            raise FmpruneError(f"unknown group reduction {self.group_reduction!r} (available: {', '.join(REDUCTIONS)})")
        if self.eval_split not in EVAL_SPLITS:
            raise FmpruneError(f"unknown evaluation split {self.eval_split!r} (available: val, test)")
        if self.maps_per_step <= 0 or (self.maps_per_step >= 1 and self.maps_per_step != int(self.maps_per_step)):
            raise FmpruneError(f"maps per step must be a positive integer or a fraction in (0, 1), "
                               f"got {self.maps_per_step}")
        check_distillation(self.distill, self.distill_temperature)
        if self.final_tune < 0:
            raise FmpruneError(f"final tune iterations must be >= 0, got {self.final_tune}")
        for name in ("steps", "calibration", "eval_size", "retrain_batch", "save_every"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "steps" else 1):
                raise FmpruneError(f"{name.replace('_', ' ')} must be positive, got {value}")
        if self.retrain < 0:
            raise FmpruneError(f"retrain iterations must be >= 0, got {self.retrain}")
        if self.retrain_only_pruned_layer and self.retrain == 0:
            raise FmpruneError("--retrain-only-pruned-layer needs --retrain N with N > 0")
        for name in ("min_accuracy", "target_params", "target_macs", "target_latency"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise FmpruneError(f"{name.replace('_', ' ')} must be a fraction in (0, 1], got {value}")
        if self.latency_runtime not in RUNTIMES or self.latency_clock not in CLOCKS:
            raise FmpruneError(f"unknown latency runtime {self.latency_runtime!r} or clock {self.latency_clock!r} "
                               f"(runtimes: {', '.join(RUNTIMES)}; clocks: {', '.join(CLOCKS)})")
        if self.round_to is not None and not (isinstance(self.round_to, int) and self.round_to >= 1):
            raise FmpruneError(f"round to must be a positive integer, got {self.round_to}")
        if self.round_to is not None and self.round_to > 1 and self.rank_once:
            raise FmpruneError("--round-to and --rank-once do not go together (a ranking made once is not in chunks)")

    @property
    def uses_latency(self) -> bool:
        """Whether the run needs a latency table (a latency target, term or per-cost latency)."""
        return self.target_latency is not None or self.latency_lambda != 0 or self.per_cost == "latency"

    @property
    def rounding(self) -> int:
        """The ``round_to`` the run uses: as given, else the latency runtime's channel multiple
        when the run prunes for latency (8 on onnxruntime: other widths run slower there than
        the unpruned model; not with rank_once, whose ranking is not in chunks), else 1."""
        if self.round_to is not None:
            return self.round_to
        if self.uses_latency and not self.rank_once:
            return channel_multiple(self.latency_runtime, self.latency_device)
        return 1

    def to_dict(self) -> dict:
        return {**asdict(self), "ignore": list(self.ignore)}   # JSON-shaped, as config.json holds it

    @classmethod
    def from_dict(cls, d: dict) -> "PruneConfig":
        return config_from_dict(cls, d)


def config_from_dict(cls: type, d: dict):
    """A config dataclass from its JSON form (config.json, an experiment's run): keys it does not
    know (library versions, the device) are left out, lists back to the tuples they were."""
    names = {f.name: f for f in fields(cls)}
    values = {k: v for k, v in d.items() if k in names}
    for k, v in values.items():
        if isinstance(v, list) and "tuple" in str(names[k].type):
            values[k] = tuple(v)
    return cls(**values)
