"""Matplotlib set up once for writing files (the Agg backend, fixed SVG ids) and the one way a
figure is saved; every figure module imports ``plt`` from here, so the setup comes first."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "fmprune"   # fixed SVG element ids: same runs, same files
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, stem: Path) -> list[Path]:
    """PNG and SVG (with fixed metadata, so the same study gives the same files)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=120, metadata={"Date": None} if p.suffix == ".svg" else None)
    plt.close(fig)
    return paths
