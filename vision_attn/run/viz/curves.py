"""Curves: test top-1 against the number of training images, one line per model (the data-size sweep's plot), and
each model's gap to the baseline with its confidence band.

Drawn in the project's one style (:mod:`vision_attn.run.viz.style`: Agg canvas, no pyplot, no display).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .style import new_figure, save_figure

__all__ = ["plot_data_size"]


def plot_data_size(
    summary: Mapping[str, Sequence[Mapping[str, Any]]],
    path: Union[str, Path],
    title: str = "Attention vs CNN by training-set size",
    gaps: Optional[Mapping[str, Sequence[Mapping[str, Any]]]] = None,
    baseline: Optional[str] = None,
    band: str = "min–max over seeds",
) -> Path:
    """Write a PNG of top-1 (%) vs training images (log x) and return its path.

    ``summary`` maps a model label to its points in order of ``n_train``, each with ``n_train``, ``top1``,
    ``top1_min``, ``top1_max`` (fractions in [0, 1]) and ``seeds``; where a model has several seeds, the band
    between their min and max is shaded (``band`` names it in the axis label). With ``gaps`` (model -> points with
    ``n_train``, ``gap``, ``low``, ``high``, as :func:`vision_attn.run.data_size.paired_gaps` gives), a second panel
    shows each model's gap to ``baseline`` in top-1 points with its 95% CI shaded, and the zero line.
    """
    fig, axes = new_figure(cols=2 if gaps else 1, size=(6, 4))
    ax = axes[0][0]
    colors = {}
    for model, points in summary.items():
        x = [p["n_train"] for p in points]
        (line,) = ax.plot(
            x, [100 * p["top1"] for p in points], marker="o", label=model + (" (baseline)" if model == baseline else "")
        )
        colors[model] = line.get_color()
        if any(p["seeds"] > 1 for p in points):
            ax.fill_between(
                x,
                [100 * p["top1_min"] for p in points],
                [100 * p["top1_max"] for p in points],
                color=colors[model],
                alpha=0.2,
            )
    ticks = sorted({p["n_train"] for points in summary.values() for p in points})
    _axes(ax, f"test top-1 (%), band: {band}", title, ticks)
    if gaps:
        ax = axes[0][1]
        ax.axhline(0.0, color="black", linewidth=1)
        for model, points in gaps.items():
            if not points:
                continue
            x = [p["n_train"] for p in points]
            ax.plot(x, [100 * p["gap"] for p in points], marker="o", color=colors.get(model), label=model)
            ci = [p for p in points if p["low"] is not None]
            if ci:
                ax.fill_between(
                    [p["n_train"] for p in ci],
                    [100 * p["low"] for p in ci],
                    [100 * p["high"] for p in ci],
                    color=colors.get(model),
                    alpha=0.2,
                )
        _axes(ax, "gap to baseline (top-1 points), band: 95% CI", f"model − {baseline}, paired by seed", ticks)
    return save_figure(fig, path, dpi=120)


def _axes(ax, ylabel: str, title: str, ticks: Sequence[int]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(ticks, labels=[str(t) for t in ticks])  # the measured sizes, not powers of ten
    ax.set_xticks([], minor=True)
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
