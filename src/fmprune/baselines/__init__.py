"""The classic filter-pruning baselines, usable on any model the engine traces:

* ``oneshot`` — Li et al. 2017: every layer pruned once at a given ratio (or ratios from a
  sensitivity analysis, or a size target), then retrained; works with any registered criterion,
  per layer or ranked globally (network slimming's |γ| threshold);
* ``sensitivity`` — each layer pruned alone at 10 %, 20 %, … without retraining (Li et al.'s figure);
* ``thinet`` — Luo et al. 2017: greedy choice by the next layer's reconstruction error, then a
  least-squares rescale of the kept maps;
* ``structure`` — what they read from the graph: a group's next layer, its BatchNorm scales.

Slimming's training half is ``fmprune train --bn-l1 LAMBDA`` (``training.py``). Import the
submodules directly (``from fmprune.baselines.oneshot import run_oneshot``): this package stays
free of engine imports so the criteria can build on it.
"""
