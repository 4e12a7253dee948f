"""The classic filter-pruning baselines, usable on any model the engine traces:

* ``oneshot`` — Li et al. 2017: every layer pruned once at a given ratio (or ratios from a
  sensitivity analysis, or a size target), then retrained; works with any registered criterion,
  per layer or ranked globally (network slimming's |γ| threshold);
* ``sensitivity`` — each layer pruned alone at 10 %, 20 %, … without retraining (Li et al.'s figure);
* ``thinet_rescale`` — Luo et al. 2017: removal of ThiNet's greedy choice (the ranking by the next
  layer's reconstruction error is the criterion, ``criteria/thinet.py``), then a least-squares
  rescale of the kept maps.

Slimming's ranking is ``criteria/slimming.py``, its training half ``fmprune train --bn-l1 LAMBDA``
(``training.py``). The baselines build on the criteria, the engine and ``run/``; nothing below
imports them. Import the submodules directly (``from fmprune.baselines.oneshot import run_oneshot``).
"""
