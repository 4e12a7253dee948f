"""Per-group normalisations against hand computations, and the group-size bias that separates
``l2`` from ``rms``."""

from __future__ import annotations

import pytest
import torch

from fmprune.criteria import normalize


def test_each_normalisation_by_hand():
    v = torch.tensor([1.0, 2.0, 2.0])
    assert torch.allclose(normalize({"g": v}, "l1")["g"], v / 5)
    assert torch.allclose(normalize({"g": v}, "l2")["g"], v / 3)
    assert torch.allclose(normalize({"g": v}, "rms")["g"], v / (9 / 3) ** 0.5)
    assert torch.allclose(normalize({"g": v}, "mean")["g"], v / (5 / 3))
    assert torch.equal(normalize({"g": v}, "none")["g"], v)


def test_l2_ranks_a_large_group_lower_rms_does_not():
    """Two groups whose maps are equally important (the same scores, repeated): after l2 every map
    of the 100-map group ranks below every map of the 4-map group; after rms they interleave."""
    small = torch.tensor([1.0, 2.0, 3.0, 4.0])
    large = small.repeat(25)
    l2 = normalize({"small": small, "large": large}, "l2")
    assert l2["large"].max() < l2["small"].min()
    rms = normalize({"small": small, "large": large}, "rms")
    assert torch.allclose(rms["large"][:4], rms["small"])


def test_per_cost_divides_by_the_relative_cost_a_removal_saves():
    from fmprune.criteria import per_cost
    scores = {"conv": torch.tensor([1.0, 2.0]), "fc": torch.tensor([1.0, 2.0])}
    costs = {"conv": (10, 300), "fc": (1000, 100)}          # (params, MACs) per map
    by_macs = per_cost(scores, costs, "macs")                 # mean MACs 200: conv x1.5, fc x0.5
    assert torch.allclose(by_macs["conv"], torch.tensor([1 / 1.5, 2 / 1.5]))
    assert torch.allclose(by_macs["fc"], torch.tensor([2.0, 4.0]))
    by_params = per_cost(scores, costs, "params")             # mean 505
    assert torch.allclose(by_params["fc"], scores["fc"] / (1000 / 505))
    assert per_cost(scores, costs, "none") == scores


def test_a_heavy_tail_sets_the_scale_less_under_mean_than_under_rms():
    """A group of 99 ordinary maps (score 1) and one far above (score 100): rms puts the ordinary
    maps at about 0.1, as if all were unimportant; mean at about 0.5."""
    v = torch.cat([torch.ones(99), torch.tensor([100.0])])
    assert normalize({"g": v}, "rms")["g"][0] == pytest.approx(1 / ((99 + 100 ** 2) / 100) ** 0.5)
    assert normalize({"g": v}, "mean")["g"][0] == pytest.approx(1 / (199 / 100))


def test_lamp_by_hand():
    """Each score over the sum of the scores at or above it: 4 → 4/4, 3 → 3/7, 1 → 1/8, 2 → 2/9
    (sorted 1, 2, 3, 4: the sums from each rank up are 10, 9, 7, 4)."""
    v = torch.tensor([3.0, 1.0, 4.0, 2.0])
    assert torch.allclose(normalize({"g": v}, "lamp")["g"], torch.tensor([3 / 7, 1 / 10, 4 / 4, 2 / 9]))
    ties = normalize({"g": torch.tensor([1.0, 1.0])}, "lamp")["g"]
    assert torch.allclose(ties, torch.tensor([1 / 2, 1 / 1]))   # the later of equal maps ranks above


def test_lamp_takes_from_a_wide_group_before_emptying_a_skewed_narrow_one():
    """A 4-map group with one dominant map (a redundant stem) beside a 100-map group with its
    scores spread evenly: after rms the narrow group's three small maps rank lowest and global
    selection takes all three (leaving one map); after LAMP the wide group's lowest maps go first."""
    from fmprune.engine.selection import select_minimum
    scores = {"narrow": torch.tensor([0.1, 0.1, 0.1, 1.0]), "wide": torch.linspace(1.0, 2.0, 100)}
    alive = {"narrow": list(range(4)), "wide": list(range(100))}
    by_rms = select_minimum(normalize(scores, "rms"), alive, 3)
    assert [s.layer for s in by_rms] == ["narrow"] * 3
    by_lamp = select_minimum(normalize(scores, "lamp"), alive, 3)
    assert [(s.layer, s.index) for s in by_lamp] == [("wide", 0), ("wide", 1), ("wide", 2)]
    assert normalize(scores, "lamp")["narrow"].max() == 1.0
