"""The general engine's accuracy after a removal recomputes only the layers from the removed group
on (``engine.general.evaluation.IncrementalEvaluator``) and equals a full forward of the pruned model."""

from __future__ import annotations

import pytest
import torch

import fmprune
from fmprune.data import Split
from fmprune.engine.general.evaluation import IncrementalEvaluator
from fmprune.training import evaluate
from support.graph_models import Concat, Depthwise, ResidualBN, SqueezeExcite, randomize_norms


def _split_the_model_gets_right(model: torch.nn.Module, n: int = 96) -> Split:
    """Images labelled with the untouched model's own predictions: accuracy starts at 1 and every
    removal that changes a prediction shows in it."""
    x = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return Split(x, model(x).argmax(1))


@pytest.mark.parametrize("model_cls", [ResidualBN, Concat, Depthwise, SqueezeExcite])
def test_incremental_accuracy_equals_a_full_forward_after_every_removal(model_cls):
    torch.manual_seed(0)
    model = randomize_norms(model_cls())
    split = _split_the_model_gets_right(model)
    graph = fmprune.trace(model, split.images[:1])
    evaluator = IncrementalEvaluator(graph, split, chunk=40)   # three chunks, the last one short
    assert evaluator.accuracy() == 1.0
    g = torch.Generator().manual_seed(2)
    for step in range(8):
        alive = [grp for grp in graph.groups if grp.size > 1]
        if not alive:
            break
        group = alive[int(torch.randint(len(alive), (1,), generator=g))]
        graph.remove(group.name, [int(torch.randint(group.size, (1,), generator=g))])
        evaluator.changed(group.name)
        assert evaluator.accuracy() == evaluate(model, split), f"step {step}: {group.name}"


def test_a_removal_near_the_output_does_not_rerun_the_stem():
    torch.manual_seed(0)
    model = randomize_norms(ResidualBN())
    split = _split_the_model_gets_right(model)
    graph = fmprune.trace(model, split.images[:1])
    evaluator = IncrementalEvaluator(graph, split, chunk=40)
    calls = {"stem": 0, "down": 0}
    for name in calls:
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: calls.__setitem__(name, calls[name] + 1))
    evaluator.accuracy()
    assert calls == {"stem": 3, "down": 3}          # the first evaluation runs everything, per chunk
    last = graph.group("down")                       # the projection block's group, after every add
    graph.remove(last.name, [0])
    evaluator.changed(last.name)
    assert evaluator.accuracy() == evaluate(model, split)
    assert calls["stem"] == 3 + 1                    # only evaluate's forward ran the stem again
    assert calls["down"] == 3 + 3 + 1


class FunctionalDropout(torch.nn.Module):
    """Dropout read from ``self.training`` in Python: fx freezes the flag at trace time."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.Linear(6, 4)

    def forward(self, x):
        x = torch.nn.functional.dropout(torch.relu(self.conv(x)), 0.5, self.training)
        return self.fc(x.mean((2, 3)))


def test_a_model_traced_in_train_mode_is_evaluated_without_dropout():
    torch.manual_seed(0)
    model = FunctionalDropout().eval()
    split = _split_the_model_gets_right(model)
    model.train()                                    # as a freshly built model is
    graph = fmprune.trace(model, split.images[:1])
    assert model.training and model.conv.training    # tracing left the modes as they were
    model.eval()
    evaluator = IncrementalEvaluator(graph, split)
    assert evaluator.accuracy() == evaluate(model, split) == 1.0
