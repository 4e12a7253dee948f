"""The sensitivity figure of Li et al. 2017 (their Figure 2b): accuracy against the fraction of
each layer's maps pruned away, one line per layer, no retraining."""

from __future__ import annotations

from pathlib import Path

from ..baselines.sensitivity import SensitivityResult
from .figures import plt, save_figure


def plot_sensitivity(result: SensitivityResult, stem: Path, title: str = "") -> list[Path]:
    """PNG and SVG at ``stem``: a line (with markers) per layer, the base accuracy dashed."""
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    ratios = [0.0, *result.ratios]
    markers = "osD^vP*X<>"
    for i, (layer, accs) in enumerate(result.accuracy.items()):
        ax.plot([100 * r for r in ratios], [100 * a for a in [result.base_accuracy, *accs]],
                marker=markers[i % len(markers)], ms=4, lw=1.4, label=f"{layer} ({result.maps[layer]} maps)")
    ax.axhline(100 * result.base_accuracy, color="0.3", ls="--", lw=0.8, label="unpruned")
    ax.set_xlabel("maps pruned away in the layer (%), lowest " + result.criterion + " first")
    ax.set_ylabel(f"{result.eval_split} accuracy (%)")
    ax.set_title(title or "Sensitivity of each layer to pruning (no retraining)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, stem)
