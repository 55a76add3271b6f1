"""The one plotting style of the project: Agg figures (no pyplot, no display), one colour map, one de-normaliser.

Every figure the project writes (attention maps, boxes, sample grids, curves) is made with :func:`new_figure`
and written with :func:`save_figure`; every image drawn goes through :func:`to_display_rgb`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["ATTENTION_CMAP", "BOX_COLORS", "new_figure", "save_figure", "to_display_rgb"]

ATTENTION_CMAP = "inferno"
BOX_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:cyan", "tab:olive", "tab:brown")


def new_figure(rows: int = 1, cols: int = 1, size: Tuple[float, float] = (2.2, 2.2), title_space: bool = False):
    """A matplotlib ``Figure`` on an Agg canvas with a ``rows x cols`` grid of axes: ``(fig, axes[r][c])``.

    ``size`` is one panel's (width, height) in inches.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * cols, size[1] * rows + (0.4 if title_space else 0)))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def save_figure(fig, path: Union[str, Path], dpi: int = 100) -> Path:
    """Lay out ``fig`` tightly and write it as a PNG at ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=dpi)
    return path


def to_display_rgb(
    image: Tensor, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None
) -> Tensor:
    """An image tensor -> ``(H, W, 3)`` float in [0, 1] for ``imshow``.

    ``image`` is ``(3 or 1, H, W)`` or ``(H, W)``. With ``mean``/``std`` (the datamodule's normalisation) it is
    de-normalised (``x * std + mean``) and clamped; without them it is min-max scaled (any range, e.g. a GAN's
    [-1, 1] or a feature map).
    """
    image = image.detach().float().cpu()
    if image.dim() == 2:
        image = image[None]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image has shape {tuple(image.shape)}; expected (3, H, W), (1, H, W) or (H, W)")
    if (mean is None) != (std is None):
        raise ValueError("to_display_rgb needs both mean and std, or neither")
    if mean is not None:
        m = torch.tensor(list(mean), dtype=image.dtype).view(-1, 1, 1)
        s = torch.tensor(list(std), dtype=image.dtype).view(-1, 1, 1)
        image = (image * s + m).clamp(0, 1)
    else:
        lo, hi = image.min(), image.max()
        image = (image - lo) / (hi - lo).clamp_min(1e-12)
    return image.expand(3, -1, -1).permute(1, 2, 0)
