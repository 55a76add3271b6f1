"""Curves: test top-1 against the number of training images, one line per model (the data-size sweep's plot).

Drawn in the project's one style (:mod:`vision_attn.run.viz.style`: Agg canvas, no pyplot, no display).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from .style import new_figure, save_figure

__all__ = ["plot_data_size"]


def plot_data_size(summary: Mapping[str, Sequence[Mapping[str, Any]]], path: Union[str, Path],
                   title: str = "Attention vs CNN by training-set size") -> Path:
    """Write a PNG of top-1 (%) vs training images (log x) and return its path.

    ``summary`` maps a model label to its points in order of ``n_train``, each with ``n_train``, ``top1``,
    ``top1_min``, ``top1_max`` (fractions in [0, 1]) and ``seeds``; where a model has several seeds, the band
    between their min and max is shaded.
    """
    fig, axes = new_figure(size=(6, 4))
    ax = axes[0][0]
    for model, points in summary.items():
        x = [p["n_train"] for p in points]
        ax.plot(x, [100 * p["top1"] for p in points], marker="o", label=model)
        if any(p["seeds"] > 1 for p in points):
            ax.fill_between(x, [100 * p["top1_min"] for p in points], [100 * p["top1_max"] for p in points], alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return save_figure(fig, path, dpi=120)
