"""Training and evaluation loops on in-memory tensors (no DataLoader: batches are index slices),
and the recipes that train each kind of model.

Two recipes: LeNet's (:class:`TrainConfig`, Adam with a one-cycle learning rate, the thesis'
base model) and the CIFAR recipe every other model gets by default (:class:`SGDConfig`, SGD with
Nesterov momentum 0.9, weight decay 5e-4, a cosine schedule, batch 128, crop + flip augmentation
where the data allows it, the input normalised by a first layer of the model). On CUDA the SGD
recipe computes in bfloat16 autocast with channels-last tensors.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .data import Augmentation, Split, Splits
from .distillation import Distillation
from .errors import FmpruneError
from .layers import batch_norm_scale
from .models import ModelSpec, Normalized, build_model, check_output
from .models.weights import freeze_features as freeze, load_pretrained
from .modes import eval_mode, logits_of
from .validate import check_numbers

EVAL_BATCH = 1000


@dataclass(frozen=True)
class TrainConfig:
    """The base training recipe: Adam with a one-cycle learning rate over ``epochs``."""

    epochs: int = 4
    batch_size: int = 100
    lr: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0
    max_iters: int | None = None   # stop (and end the schedule) after this many updates
    bn_l1: float = 0.0             # network slimming's L1 penalty on BatchNorm scales (0: none)

    def __post_init__(self) -> None:
        check_numbers(self)   # a [train] table's lr = nan fails here, before any work, as --lr nan does

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["max_iters"] is None:   # the recorded recipe of a full run stays as it always was
            del d["max_iters"]
        return _without_default_bn_l1(d)

    def iterations(self, n_train: int) -> int:
        total = self.epochs * steps_per_epoch(n_train, self.batch_size)
        return total if self.max_iters is None else min(total, self.max_iters)


@dataclass(frozen=True)
class SGDConfig:
    """The CIFAR recipe (zoo models, torchvision and user models): SGD, Nesterov momentum,
    weight decay, cosine learning rate per iteration over the whole run. ``augment`` None means
    what suits the data (crop + flip for CIFAR, none for digits); ``normalize`` puts the training
    images' per-channel mean/std in front of the model as its first layer."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    seed: int = 0
    max_iters: int | None = None
    augment: tuple[str, ...] | None = None
    crop_padding: int = 4
    normalize: bool = True
    amp: bool = True               # bfloat16 autocast, on CUDA only
    channels_last: bool = True     # on CUDA only
    bn_l1: float = 0.0             # network slimming's L1 penalty on BatchNorm scales (0: none)
    optimizer: str = field(default="sgd", init=False)   # tells the recipes apart in a checkpoint
    schedule: str = field(default="cosine", init=False)

    def __post_init__(self) -> None:
        check_numbers(self)
        self.augmentation()   # unknown augmentation names fail here, before any work

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = None if self.augment is None else list(self.augment)
        return _without_default_bn_l1(d)

    def iterations(self, n_train: int) -> int:
        total = self.epochs * steps_per_epoch(n_train, self.batch_size)
        return total if self.max_iters is None else min(total, self.max_iters)

    def augmentation(self) -> Augmentation:
        return Augmentation.from_names(tuple(self.augment or ()), self.crop_padding)


Recipe = TrainConfig | SGDConfig


def _without_default_bn_l1(d: dict) -> dict:
    """A recipe without slimming's penalty is recorded exactly as before the option existed."""
    if d.get("bn_l1") == 0:
        del d["bn_l1"]
    return d

# Per-model departures from the SGD defaults (epochs and learning rates that reach the published
# CIFAR accuracies with the cosine schedule); models not listed get the defaults as they are.
MODEL_RECIPES: dict[str, dict] = {
    "fc": {"epochs": 20, "lr": 0.05, "weight_decay": 0.0, "batch_size": 100},
}


def default_recipe(model_name: str, **overrides) -> Recipe:
    """LeNet's own recipe for ``lenet``, the SGD recipe (with the model's departures) otherwise;
    ``overrides`` that are None are ignored."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if model_name == "lenet":
        known = {f.name for f in fields(TrainConfig)}
        unused = sorted(set(given) - known)
        if unused:
            raise FmpruneError(f"LeNet's recipe (Adam, one-cycle) has no option {unused[0]!r}; "
                               f"it takes {', '.join(sorted(known))}")
        return TrainConfig(**given)
    return SGDConfig(**{**MODEL_RECIPES.get(model_name, {}), **given})


def recipe_from_dict(d: dict) -> Recipe:
    """The recipe a checkpoint recorded (older checkpoints: LeNet's)."""
    if d.get("optimizer") == "sgd":
        known = {f.name for f in fields(SGDConfig) if f.init}
        values = {k: v for k, v in d.items() if k in known}
        if values.get("augment") is not None:
            values["augment"] = tuple(values["augment"])
        return SGDConfig(**values)
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in d.items() if k in known})


class BatchStream:
    """An endless, seeded stream of shuffled minibatches; its position can be saved and restored
    so a resumed run sees exactly the batches an uninterrupted run would have."""

    def __init__(self, split: Split, batch_size: int, seed: int, augment: Augmentation | None = None) -> None:
        self.split, self.batch_size, self.seed = split, batch_size, seed
        self.augment = augment if augment is not None and augment.active else None
        self.epoch, self.offset = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.split), generator=g)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.offset + self.batch_size > len(self._order):
            self.epoch, self.offset = self.epoch + 1, 0
            self._order = self._permutation()
        idx = self._order[self.offset:self.offset + self.batch_size].to(self.split.images.device)
        images = self.split.images[idx]
        if self.augment is not None:   # seeded by the batch's place in the stream: resumable
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_033 + self.offset)
            images = self.augment(images, g)
        self.offset += self.batch_size
        return images, self.split.labels[idx]

    def state(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def restore(self, state: dict) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        self._order = self._permutation()


def steps_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size


def train(model: nn.Module, train_split: Split, config: TrainConfig,
          on_step: Callable[[int, int, float], None] | None = None) -> None:
    """Train ``model`` from its current weights with the base recipe (deterministic per seed)."""
    torch.manual_seed(config.seed)
    stream = BatchStream(train_split, config.batch_size, config.seed)
    total = config.iterations(len(train_split))
    if total < 1:
        raise FmpruneError(f"batch size {config.batch_size} is larger than the {len(train_split):,} training "
                           "images; choose a smaller one")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total,
                                                   pct_start=0.15)
    fine_tune(model, stream, optimizer, total, schedule, on_step, bn_l1=config.bn_l1)


def fine_tune(model: nn.Module, stream: BatchStream, optimizer: torch.optim.Optimizer, iterations: int,
              schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
              on_step: Callable[[int, int, float], None] | None = None, *,
              autocast: torch.dtype | None = None, channels_last: bool = False, bn_l1: float = 0.0,
              distill: Distillation | None = None) -> None:
    """``iterations`` minibatch updates with an existing optimizer (base training and the
    retraining protocols), leaving the model in eval mode. ``autocast`` computes the forward in
    that dtype on the batches' device; ``channels_last`` feeds NHWC batches. ``bn_l1`` adds
    network slimming's penalty λ·Σ|γ| over every BatchNorm scale (its subgradient λ·sign(γ),
    added to the gradients before each update; the reported loss is the cross-entropy alone).
    ``distill`` minimises its loss (labels and a teacher's softened output) instead of the
    cross-entropy alone."""
    norms = slimming_parameters(model, bn_l1)
    model.train()
    for step in range(iterations):
        x, y = next(stream)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=autocast) if autocast is not None else nullcontext():
            logits = model(x)
            loss = distill.loss(logits, x, y) if distill is not None else F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for gamma in norms:
            if gamma.grad is not None:
                gamma.grad.add_(torch.sign(gamma.detach()), alpha=bn_l1)
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if on_step is not None:
            on_step(step + 1, iterations, loss.item())
    model.eval()


def slimming_parameters(model: nn.Module, bn_l1: float) -> list[nn.Parameter]:
    """The BatchNorm scales ``bn_l1`` penalises (none when it is 0); a model without any is refused."""
    if bn_l1 == 0:
        return []
    if bn_l1 < 0:
        raise FmpruneError(f"--bn-l1 must be >= 0, got {bn_l1}")
    norms = [gamma for m in model.modules() if (gamma := batch_norm_scale(m)) is not None]
    if not norms:
        raise FmpruneError("--bn-l1 penalises BatchNorm scales, and this model has no BatchNorm with a scale "
                           "(e.g. lenet); train a model with BatchNorm (resnet20, vgg11_bn, mobilenetv2)")
    return norms


EpochCallback = Callable[[int, int, dict], None]


def cosine_schedule(optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate × (1 + cos(π t / total)) / 2, stepped every iteration: a short run anneals too."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total)))


def train_sgd(model: nn.Module, train_split: Split, config: SGDConfig,
              on_step: Callable[[int, int, float], None] | None = None,
              on_epoch: Callable[[int, int], None] | None = None) -> None:
    """Train ``model`` (already on the split's device) with the SGD recipe, deterministic per
    seed on a given device. ``on_epoch(epoch, epochs)`` runs after each pass over the data."""
    torch.manual_seed(config.seed)
    device = train_split.images.device
    per_epoch = steps_per_epoch(len(train_split), config.batch_size)
    total = config.iterations(len(train_split))
    if total < 1:
        raise FmpruneError(f"batch size {config.batch_size} is larger than the {len(train_split):,} training "
                           "images; choose a smaller one")
    cuda = device.type == "cuda"
    channels_last = cuda and config.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    stream = BatchStream(train_split, config.batch_size, config.seed, config.augmentation())
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov, weight_decay=config.weight_decay)
    schedule = cosine_schedule(optimizer, total)
    epochs = math.ceil(total / per_epoch)
    done = 0
    for epoch in range(1, epochs + 1):
        n = min(per_epoch, total - done)
        # on_step counts over the whole run (a bar's total, a log's step), not within the epoch
        whole_run = None if on_step is None else (lambda step, _, loss, before=done: on_step(before + step, total,
                                                                                              loss))
        fine_tune(model, stream, optimizer, n, schedule, whole_run,
                  autocast=torch.bfloat16 if cuda and config.amp else None, channels_last=channels_last,
                  bn_l1=config.bn_l1)
        done += n
        if on_epoch is not None:
            on_epoch(epoch, epochs)
    if channels_last:
        model.to(memory_format=torch.contiguous_format)


def train_recipe(model: nn.Module, train_split: Split, recipe: Recipe,
                 on_step: Callable[[int, int, float], None] | None = None,
                 on_epoch: Callable[[int, int], None] | None = None) -> None:
    """Train with whichever recipe ``recipe`` is (model and split on the same device)."""
    if isinstance(recipe, SGDConfig):
        train_sgd(model, train_split, recipe, on_step, on_epoch)
    else:
        train(model, train_split, recipe, on_step)


@dataclass
class Trained:
    """A freshly trained model with what a checkpoint records about it."""

    model: nn.Module
    spec: ModelSpec
    recipe: dict
    accuracies: dict[str, float]
    seconds: float


def resolve_recipe(recipe: Recipe, splits: Splits) -> Recipe:
    """Fill in what the data decides: the augmentation that suits it (SGD recipe)."""
    if isinstance(recipe, SGDConfig) and recipe.augment is None:
        return replace(recipe, augment=tuple(splits.augmentation))
    return recipe


def train_model(spec: ModelSpec, splits: Splits, recipe: Recipe, device: torch.device | str = "cpu",
                on_step: Callable[[int, int, float], None] | None = None,
                on_epoch: Callable[[int, int, dict], None] | None = None,
                weights: Path | None = None, freeze_features: bool = False) -> Trained:
    """Build ``spec`` from seed ``recipe.seed`` (behind the data's normalisation when the recipe
    asks for it), train it on the training split and measure validation and test accuracy.
    ``on_epoch(epoch, epochs, {"val": accuracy})`` reports the validation accuracy per epoch.
    ``weights``: start from this state dict (head replaced when its classes differ); with
    ``freeze_features`` only the classifier trains (``fmprune.models.weights``)."""
    device = torch.device(device)
    recipe = resolve_recipe(recipe, splits)
    stats: dict = {}
    if isinstance(recipe, SGDConfig) and recipe.normalize:
        mean, std = splits.channel_stats()
        spec = spec.with_normalization(mean, std)
        stats = {"mean": mean, "std": std}
    torch.manual_seed(recipe.seed)
    model = build_model(spec)
    check_output(model, spec)
    net = model.net if isinstance(model, Normalized) else model
    start_from = load_pretrained(net, Path(weights), spec.name) if weights is not None else None
    trainable = freeze(net) if freeze_features else None
    model.to(device)
    val_split = splits.val.to(device)

    def epoch_done(epoch: int, epochs: int) -> None:
        if on_epoch is not None:
            on_epoch(epoch, epochs, {"val": evaluate(model, val_split)})

    start = time.perf_counter()
    train_recipe(model, splits.train.to(device), recipe, on_step, epoch_done)
    seconds = time.perf_counter() - start
    for p in model.parameters():   # the saved model is a plain one again
        p.requires_grad_(True)
    accuracies = {"val": evaluate(model, val_split), "test": evaluate(model, splits.test.to(device))}
    model.to("cpu")
    record = {**recipe.to_dict(), "train_seconds": round(seconds, 1)}
    if stats:
        record["normalization"] = stats
    if start_from is not None:
        record["weights"] = start_from
    if trainable is not None:
        record["trained_only"] = trainable
    if device.type != "cpu":
        record["device"] = str(device)
    return Trained(model.eval(), spec, record, accuracies, seconds)


@torch.no_grad()
def predict(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
            batch: int = EVAL_BATCH) -> torch.Tensor:
    return torch.cat([forward(images[i:i + batch]) for i in range(0, len(images), batch)])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose largest logit is the label, from the exact count (not a float32
    mean, whose rounding would make 9155/10000 read 0.91549999)."""
    return int((logits.argmax(1) == labels).sum()) / max(1, len(labels))


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch: int = EVAL_BATCH) -> float:
    """Accuracy of ``model`` in eval mode on a split held in memory, ``batch`` images per forward
    (modes restored). The one evaluator of training, every run and every baseline; the pruning
    engines count the same way on values they keep (the chain path's cached logits through
    :func:`accuracy`, the general path's ``IncrementalEvaluator``, which a test checks equal to it)."""
    correct = 0
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(split), batch):
            logits = logits_of(model(split.images[start:start + batch]))
            correct += int((logits.argmax(1) == split.labels[start:start + batch]).sum())
    return correct / max(1, len(split))
