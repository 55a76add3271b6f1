"""Sample a trained GAN into a PNG grid, and optionally draw where its generator's self-attention looks (SAGAN Fig. 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..attention import capture_attention
from ..callbacks.sample_grids import grid_nrow, save_image_grid
from .cli import VisionAttnCLI
from .viz.attention import plot_pixel_attention

__all__ = ["sample"]


def _default_query_pixels(side: int) -> List[Tuple[int, int]]:
    return [(side // 4, side // 4), (side // 2, side // 2), (side // 4, 3 * side // 4), (3 * side // 4, side // 2)]


def sample(
    config: str,
    ckpt: str,
    out: Union[str, Path],
    n: int = 64,
    labels: Optional[Sequence[int]] = None,
    truncation: Optional[float] = None,
    seed: int = 0,
    nrow: Optional[int] = None,
    attention_out: Optional[Union[str, Path]] = None,
    query_pixels: Optional[Sequence[Tuple[int, int]]] = None,
    attention_index: int = 0,
    standing_stats: int = 0,
    overrides: Sequence[str] = (),
) -> Dict[str, object]:
    """Write the grid of ``n`` samples (and the attention PNG) of checkpoint ``ckpt`` of the GAN in ``config``.

    ``labels``: one class for all samples or ``n`` classes (default: classes cycle). ``query_pixels``: image pixels
    ``(y, x)``, drawn on the generator's attention grid for sample ``attention_index``. ``standing_stats``: first
    re-estimate the sampling generator's BatchNorm statistics over that many random batches.
    Returns ``{"grid": path, "attention": path or None, "labels": [...] or None}``.
    """
    cli = VisionAttnCLI(args=["--config", str(config), "--trainer.logger", "false", *overrides], run=False)
    task = cli.model
    task.load_weights(ckpt)
    model = task.model.eval()
    if standing_stats:
        model.recompute_ema_statistics(standing_stats, generator=torch.Generator().manual_seed(seed + 1))
    if labels is not None and len(labels) == 1:
        labels = labels[0]
    y = model.make_labels(n, labels)
    g = torch.Generator().manual_seed(seed)
    result: Dict[str, object] = {"grid": None, "attention": None, "labels": None if y is None else y.tolist()}
    if attention_out:
        gen = model.sampler
        if gen.attention is None:
            raise ValueError(f"{config}: the generator has no self-attention (g_attn_res=None): nothing to draw")
        if not 0 <= attention_index < n:
            raise ValueError(f"attention_index {attention_index} is outside the {n} samples")
        r, side = gen.attn_res, model.img_size
        pixels = list(query_pixels or _default_query_pixels(side))
        for py, px in pixels:
            if not (0 <= py < side and 0 <= px < side):
                raise ValueError(f"query pixel ({py}, {px}) is outside the {side}x{side} image")
        with capture_attention(gen) as maps:
            images = model.sample(n, labels=y, truncation=truncation, generator=g, batch_size=max(n, 1))
        weights = maps["attention"]  # (n, heads, R*R, Nk)
        grid_pixels = [(py * r // side, px * r // side) for py, px in pixels]
        title = f"generator self-attention at {r}x{r}" + (f", class {int(y[attention_index])}" if y is not None else "")
        result["attention"] = str(
            plot_pixel_attention(
                weights,
                (r, r),
                grid_pixels,
                attention_out,
                image=images[attention_index],
                batch_index=attention_index,
                title=title,
            )
        )
    else:
        images = model.sample(n, labels=y, truncation=truncation, generator=g)
    if nrow is None and labels is None:
        nrow = grid_nrow(n, model.num_classes)  # one class per column
    result["grid"] = str(save_image_grid(images, out, nrow=nrow))
    print(f"wrote {result['grid']}" + (f" and {result['attention']}" if result["attention"] else ""))
    return result
