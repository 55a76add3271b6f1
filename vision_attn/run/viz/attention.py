"""Where pixels attend: per-pixel attention maps from captured weights, and a PNG of a few query pixels.

Works on what :func:`vision_attn.attention.capture_attention` records for pixel attention:

* global weights ``(B, heads, H*W, Nk)`` (``NonLocalBlock2d``; ``Nk`` is the key grid, possibly pooled);
* local window weights ``(B, heads, H*W, k*k)`` (``LocalSelfAttention2d``), given ``kernel_size=k``.

Drawing uses the project's one style (:mod:`vision_attn.run.viz.style`: Agg canvas, no pyplot, no display).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .style import ATTENTION_CMAP, new_figure, save_figure, to_display_rgb

__all__ = ["query_pixel", "window_weights_to_dense", "pixel_attention_maps", "plot_pixel_attention"]


def query_pixel(text: str) -> Tuple[int, int]:
    """``"y,x"`` -> ``(y, x)``: the argparse type of the tools' ``--query-pixels``."""
    import argparse

    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--query-pixels expects y,x pairs of integers such as 16,8; got {text!r}"
        ) from None
    return y, x


def window_weights_to_dense(weights: Tensor, height: int, width: int, kernel_size: int) -> Tensor:
    """Local window weights ``(..., H*W, k*k)`` -> dense ``(..., H*W, H*W)`` (zero outside each window).

    Offsets ``(dy, dx)`` of the last dim run row-major over ``-k//2 .. k//2``; offsets that fall outside the
    image must carry weight 0 (as ``LocalSelfAttention2d`` records them) and are dropped. Quadratic in
    ``H*W``: meant for small maps and tests.
    """
    n, kk = height * width, kernel_size * kernel_size
    if weights.shape[-2:] != (n, kk):
        raise ValueError(
            f"weights have shape {tuple(weights.shape)}; expected (..., H*W, k*k) = (..., {n}, {kk}) "
            f"for a {height}x{width} map and kernel_size={kernel_size}"
        )
    r = kernel_size // 2
    dev = weights.device
    ys = torch.arange(height, device=dev).repeat_interleave(width)[:, None]
    xs = torch.arange(width, device=dev).repeat(height)[:, None]
    ky = ys + torch.arange(-r, r + 1, device=dev).repeat_interleave(kernel_size)[None, :]
    kx = xs + torch.arange(-r, r + 1, device=dev).repeat(kernel_size)[None, :]
    inside = (ky >= 0) & (ky < height) & (kx >= 0) & (kx < width)  # (N, k*k)
    index = (ky.clamp(0, height - 1) * width + kx.clamp(0, width - 1)).expand(*weights.shape[:-2], n, kk)
    dense = weights.new_zeros(*weights.shape[:-1], n)
    return dense.scatter_add(-1, index, weights * inside.to(weights.dtype))


def _key_grid(num_keys: int, size: Tuple[int, int]) -> Tuple[int, int]:
    h, w = size
    for s in (1, 2, 4, 8):
        kh, kw = -(-h // s), -(-w // s)
        if kh * kw == num_keys:
            return kh, kw
    raise ValueError(
        f"cannot tell the key grid of {num_keys} keys for a {h}x{w} query map; pass key_size=(h, w) "
        "(or kernel_size=k for local window weights)"
    )


def pixel_attention_maps(
    weights: Tensor,
    size: Tuple[int, int],
    query_pixels: Sequence[Tuple[int, int]],
    kernel_size: Optional[int] = None,
    key_size: Optional[Tuple[int, int]] = None,
) -> Tensor:
    """Where each query pixel attends, as images on the key grid.

    Args:
        weights: ``(heads, H*W, Nk)`` global or ``(heads, H*W, k*k)`` local (with ``kernel_size``), one image.
        size: ``(H, W)`` of the query grid.
        query_pixels: ``(y, x)`` pixels of the query grid.
        key_size: ``(h, w)`` of the key grid for global weights (default: inferred, ``H x W`` or pooled).

    Returns:
        ``(len(query_pixels), heads, h, w)``: each row sums to 1 over ``h x w``.
    """
    if weights.dim() != 3:
        raise ValueError(f"weights have shape {tuple(weights.shape)}; expected (heads, H*W, Nk) for one image")
    H, W = size
    if weights.shape[1] != H * W:
        raise ValueError(f"weights have {weights.shape[1]} query rows; expected H*W = {H}*{W} = {H * W}")
    if kernel_size is not None:
        weights, key_size = window_weights_to_dense(weights, H, W, kernel_size), (H, W)
    key_size = _key_grid(weights.shape[-1], size) if key_size is None else tuple(key_size)
    rows = []
    for y, x in query_pixels:
        if not (0 <= y < H and 0 <= x < W):
            raise ValueError(f"query pixel (y, x) = ({y}, {x}) is outside the {H}x{W} map")
        rows.append(weights[:, y * W + x].reshape(-1, *key_size))
    return torch.stack(rows)


def plot_pixel_attention(
    weights: Tensor,
    size: Tuple[int, int],
    query_pixels: Sequence[Tuple[int, int]],
    path: Union[str, Path],
    image: Optional[Tensor] = None,
    kernel_size: Optional[int] = None,
    key_size: Optional[Tuple[int, int]] = None,
    heads: str = "mean",
    batch_index: int = 0,
    title: Optional[str] = None,
) -> Path:
    """Draw, for a few query pixels, where they attend, and save it as a PNG.

    Args:
        weights: captured weights ``(B, heads, H*W, Nk)`` (or ``(heads, H*W, Nk)``); local window weights
            ``(..., H*W, k*k)`` with ``kernel_size=k``.
        size: ``(H, W)`` of the attention's query grid (the feature map, not the image).
        query_pixels: ``(y, x)`` on that grid; each gets a column, marked by a red cross.
        path: the PNG to write.
        image: the input image ``(3, Hi, Wi)`` to draw under the maps (resized maps, nearest); optional.
        heads: ``"mean"`` (one row, averaged over heads) or ``"all"`` (one row per head).
        batch_index: which image of the batch.

    Returns:
        ``path``.
    """
    if heads not in ("mean", "all"):
        raise ValueError(f"heads must be 'mean' or 'all'; got {heads!r}")
    w = weights.detach().float().cpu()
    if w.dim() == 4:
        w = w[batch_index]
    maps = pixel_attention_maps(w, size, query_pixels, kernel_size, key_size)  # (Q, heads, h, w)
    if heads == "mean":
        maps = maps.mean(1, keepdim=True)
    H, W = size
    canvas_hw = (H, W) if image is None else tuple(image.shape[-2:])
    maps = F.interpolate(maps, size=canvas_hw, mode="nearest")  # key grid -> image pixels
    background = None if image is None else to_display_rgb(image)
    sy, sx = canvas_hw[0] / H, canvas_hw[1] / W
    n_rows, n_cols = maps.shape[1], maps.shape[0]
    fig, axes = new_figure(n_rows, n_cols, title_space=bool(title))
    for c, (y, x) in enumerate(query_pixels):
        for r in range(n_rows):
            ax = axes[r][c]
            m = maps[c, r]
            if background is not None:
                ax.imshow(background.numpy(), interpolation="nearest")
                ax.imshow(m.numpy(), cmap=ATTENTION_CMAP, alpha=0.6, interpolation="nearest")
            else:
                ax.imshow(m.numpy(), cmap=ATTENTION_CMAP, interpolation="nearest")
            ax.plot([(x + 0.5) * sx - 0.5], [(y + 0.5) * sy - 0.5], marker="x", color="red", markersize=8, mew=2)
            ax.set_xticks([])
            ax.set_yticks([])
            label = f"query ({y}, {x})" if r == 0 else ""
            ax.set_title(label + ("" if heads == "mean" else f"{chr(10) if label else ''}head {r}"), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
