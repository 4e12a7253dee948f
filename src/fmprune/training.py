"""Training and evaluation loops on in-memory tensors (no DataLoader: batches are index slices)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .data import Split

EVAL_BATCH = 1000


@dataclass(frozen=True)
class TrainConfig:
    """The base training recipe: Adam with a one-cycle learning rate over ``epochs``."""

    epochs: int = 4
    batch_size: int = 100
    lr: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class BatchStream:
    """An endless, seeded stream of shuffled minibatches; its position can be saved and restored
    so a resumed run sees exactly the batches an uninterrupted run would have."""

    def __init__(self, split: Split, batch_size: int, seed: int) -> None:
        self.split, self.batch_size, self.seed = split, batch_size, seed
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
        self.offset += self.batch_size
        return self.split.images[idx], self.split.labels[idx]

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
    total = config.epochs * steps_per_epoch(len(train_split), config.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total,
                                                   pct_start=0.15)
    fine_tune(model, stream, optimizer, total, schedule, on_step)


def fine_tune(model: nn.Module, stream: BatchStream, optimizer: torch.optim.Optimizer, iterations: int,
              schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
              on_step: Callable[[int, int, float], None] | None = None) -> None:
    """``iterations`` minibatch updates with an existing optimizer (base training and the
    retraining protocols), leaving the model in eval mode."""
    model.train()
    for step in range(iterations):
        x, y = next(stream)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if on_step is not None:
            on_step(step + 1, iterations, loss.item())
    model.eval()


@torch.no_grad()
def predict(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
            batch: int = EVAL_BATCH) -> torch.Tensor:
    return torch.cat([forward(images[i:i + batch]) for i in range(0, len(images), batch)])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def evaluate(model: nn.Module, split: Split, batch: int = EVAL_BATCH) -> float:
    """Accuracy of ``model`` in eval mode on ``split``."""
    was_training = model.training
    model.eval()
    acc = accuracy(predict(model, split.images, batch), split.labels)
    model.train(was_training)
    return acc
