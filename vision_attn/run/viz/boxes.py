"""Detections on an image, and where a DETR's object queries look (decoder cross-attention), in the project style."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch.nn.functional as F
from torch import Tensor

from .style import ATTENTION_CMAP, BOX_COLORS, new_figure, save_figure

__all__ = ["last_cross_attention", "draw_box", "plot_detections", "plot_query_attention"]


def last_cross_attention(maps: Dict[str, Tensor]) -> Tensor:
    """The ``(B, H, Q, h*w)`` map of the last decoder layer's cross-attention (``...decoder.layers.N.multihead_attn``)."""
    found = [
        (int(m.group(1)), name) for name in maps if (m := re.search(r"decoder\.layers\.(\d+)\.multihead_attn$", name))
    ]
    if not found:
        raise RuntimeError(f"no decoder cross-attention among the captured modules: {sorted(maps)[:8]} ...")
    return maps[max(found)[1]]


def draw_box(ax, box: Sequence[float], color: str, text: Optional[str] = None) -> None:
    """Draw ``box`` = ``(x0, y0, x1, y1)`` in pixels on ``ax`` with an optional label."""
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=2))
    if text:
        ax.text(
            x0,
            y0,
            text,
            color="white",
            fontsize=8,
            va="bottom",
            bbox=dict(facecolor=color, alpha=0.7, pad=1, edgecolor="none"),
        )


def _color(label: int) -> str:
    return BOX_COLORS[label % len(BOX_COLORS)]


def plot_detections(
    rgb: Tensor,
    boxes: Tensor,
    labels: Sequence[int],
    scores: Sequence[float],
    names: Sequence[str],
    path: Union[str, Path],
    title: str = "",
) -> Path:
    """``rgb (H, W, 3)`` in [0, 1] with ``boxes (N, 4)`` (x0, y0, x1, y1 pixels), their labels and scores, as a PNG."""
    h, w = rgb.shape[:2]
    fig, axes = new_figure(1, 1, size=(5, 5 * h / w))
    ax = axes[0][0]
    ax.imshow(rgb.numpy())
    for box, lab, score in zip(boxes, labels, scores):
        draw_box(ax, box, _color(int(lab)), f"{names[int(lab)] or int(lab)} {float(score):.2f}")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return save_figure(fig, path)


def plot_query_attention(
    rgb: Tensor,
    attention: Tensor,
    feature_hw: Sequence[int],
    stride: int,
    queries: Sequence[int],
    boxes: Tensor,
    labels: Sequence[int],
    scores: Sequence[float],
    names: Sequence[str],
    path: Union[str, Path],
    title: str = "",
) -> Path:
    """One panel per query: ``attention (Q, h*w)`` of that query over the image ``rgb (H, W, 3)``, with its box.

    ``feature_hw`` = ``(h, w)`` of the attended feature grid; ``stride`` maps it to pixels (bilinear upsampling).
    """
    H, W = rgb.shape[:2]
    fh, fw = feature_hw
    fig, axes = new_figure(1, len(queries), size=(4, 4 * H / W), title_space=bool(title))
    for ax, q in zip(axes[0], queries):
        grid = attention[q].float().reshape(1, 1, fh, fw)
        up = F.interpolate(grid, size=(fh * stride, fw * stride), mode="bilinear", align_corners=False)[0, 0, :H, :W]
        ax.imshow(rgb.numpy())
        ax.imshow(up.numpy(), cmap=ATTENTION_CMAP, alpha=0.6)
        lab = int(labels[q])
        draw_box(ax, boxes[q], _color(lab), f"q{q}: {names[lab] or lab} {float(scores[q]):.2f}")
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
