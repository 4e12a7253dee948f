"""What decides a sparsify run's result (saved as ``config.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import FmpruneError
from ..validate import check_numbers
from ..run.config import config_from_dict
from .weight_layers import parse_layer_list
from .select import SCOPES, WEIGHT_METHODS, check_amount

UNIT_METHOD = "unit"
METHODS = WEIGHT_METHODS + (UNIT_METHOD,)
OPTIMIZERS = ("adam", "sgd")
EVAL_SPLITS = ("val", "test")


@dataclass(frozen=True)
class SparsifyConfig:
    """Weight pruning (``magnitude``, ``random``) or unit pruning (``unit``) to ``amount``.

    With ``retrain`` > 0 the amount is reached in ``rounds`` equal steps, each followed by
    ``retrain`` minibatch updates with the masks held (Han et al. 2015); ``optimizer`` ``sgd``
    uses momentum 0.9 as Han did, ``adam`` matches fmprune's feature-map retraining."""

    method: str = "magnitude"
    scope: str = "layer"                # per layer, or one ranking over all layers ("global")
    amount: float = 0.9                 # fraction of weights (units) pruned, in [0, 1)
    layers: str | None = None           # comma-separated layer names; None: every layer
    retrain: int = 0                    # minibatch updates after each round
    rounds: int = 1
    optimizer: str = "adam"
    retrain_lr: float = 1e-4
    retrain_batch: int = 100
    eval_split: str = "val"
    eval_size: int | None = None        # None: the whole split
    seed: int = 0                       # random selection, minibatch order, dropout

    def __post_init__(self) -> None:
        check_numbers(self)
        if self.method not in METHODS:
            raise FmpruneError(f"unknown method {self.method!r} (available: {', '.join(METHODS)})")
        if self.scope not in SCOPES:
            raise FmpruneError(f"unknown scope {self.scope!r} (available: {', '.join(SCOPES)})")
        check_amount(self.amount)
        parse_layer_list(self.layers)
        if self.optimizer not in OPTIMIZERS:
            raise FmpruneError(f"unknown optimizer {self.optimizer!r} (available: {', '.join(OPTIMIZERS)})")
        if self.eval_split not in EVAL_SPLITS:
            raise FmpruneError(f"unknown evaluation split {self.eval_split!r} (available: val, test)")
        if self.retrain < 0:
            raise FmpruneError(f"retrain iterations must be >= 0, got {self.retrain}")
        if self.rounds < 1:
            raise FmpruneError(f"rounds must be >= 1, got {self.rounds}")
        if self.rounds > 1 and self.retrain == 0:
            raise FmpruneError(f"{self.rounds} rounds without retraining prune the same weights as one: "
                               "give --retrain N with N > 0")
        for name in ("retrain_batch", "eval_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FmpruneError(f"{name.replace('_', ' ')} must be positive, got {value}")
        if self.retrain_lr <= 0:
            raise FmpruneError(f"retrain learning rate must be positive, got {self.retrain_lr}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SparsifyConfig":
        return config_from_dict(cls, d)
