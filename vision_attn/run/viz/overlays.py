"""Where a model looked on one image, from the weights :func:`vision_attn.capture_attention` records:

- ViT: attention rollout (Abnar & Zuidema 2020) and the last layer's class-token attention, over the image;
- DETR: the last decoder layer's cross-attention of each detected object (:func:`.boxes.plot_query_attention`);
- pixel attention (non-local, SASA): where chosen pixels attend (:func:`.attention.plot_pixel_attention`).

All in the project's one style (:mod:`.style`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import plot_pixel_attention
from .style import ATTENTION_CMAP, new_figure, save_figure

__all__ = [
    "vit_block_maps",
    "attention_rollout",
    "token_relevance",
    "plot_token_maps",
    "query_grid_size",
    "to_query_grid",
    "plot_pixel_maps",
]


def vit_block_maps(maps: Mapping[str, Tensor]) -> List[Tensor]:
    """The ``(B, H, N, N)`` self-attention of every ViT block (``blocks.<i>.attn``), first block first."""
    found = sorted((int(m.group(1)), name) for name in maps if (m := re.search(r"(?:^|\.)blocks\.(\d+)\.attn$", name)))
    return [maps[name] for _, name in found]


def attention_rollout(layers: Sequence[Tensor]) -> Tensor:
    """Attention rollout: per layer the mean over heads plus the identity (the residual path), rows renormalised to
    sum to 1, multiplied from the first layer to the last.

    Args:
        layers: ``(B, H, N, N)`` attention of each layer, in forward order.

    Returns:
        ``(B, N, N)``: row i = how much each input token flowed into output token i; rows sum to 1.
    """
    if not layers:
        raise ValueError("attention_rollout needs the attention of at least one layer")
    rollout = None
    for w in layers:
        a = w.float().mean(1)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    return rollout


def token_relevance(attn: Tensor, num_prefix_tokens: int) -> Tensor:
    """``(B, N, N)`` token-to-token weights -> ``(B, N - P)`` relevance of each patch for the prediction: the class
    token's row when there is one (``P >= 1``), else the mean over patch rows (what average pooling reads)."""
    patches = attn[:, :, num_prefix_tokens:]
    return patches[:, 0] if num_prefix_tokens > 0 else patches.mean(1)


def plot_token_maps(rgb: Tensor, maps: Mapping[str, Tensor], path: Union[str, Path], title: str = "") -> Path:
    """The image ``rgb (H, W, 3)`` in [0, 1], then each ``(gh, gw)`` map (bilinear to the image) over it, one panel each."""
    H, W = rgb.shape[:2]
    fig, axes = new_figure(1, 1 + len(maps), size=(3, 3 * H / W), title_space=bool(title))
    axes[0][0].imshow(rgb.numpy())
    axes[0][0].set_title("input", fontsize=8)
    for ax, (name, grid) in zip(axes[0][1:], maps.items()):
        up = F.interpolate(grid.float()[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0]
        ax.imshow(rgb.numpy())
        ax.imshow(up.numpy(), cmap=ATTENTION_CMAP, alpha=0.6)
        ax.set_title(name, fontsize=8)
    for ax in axes[0]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def query_grid_size(num_queries: int, image_hw: Tuple[int, int]) -> Tuple[int, int]:
    """The ``(h, w)`` feature grid with ``h * w = num_queries`` of an ``(H, W)`` input, at a power-of-two stride."""
    H, W = image_hw
    for s in (1, 2, 4, 8, 16, 32, 64):
        h, w = math.ceil(H / s), math.ceil(W / s)
        if h * w == num_queries:
            return h, w
    raise ValueError(f"cannot tell the grid of {num_queries} query pixels for a {H}x{W} input (strides 1..64 tried)")


def to_query_grid(
    pixels: Sequence[Tuple[int, int]], image_hw: Tuple[int, int], grid_hw: Tuple[int, int]
) -> List[Tuple[int, int]]:
    """Input-image pixels ``(y, x)`` -> the cells of an ``(h, w)`` feature grid that cover them."""
    (H, W), (h, w) = image_hw, grid_hw
    out = []
    for y, x in pixels:
        if not (0 <= y < H and 0 <= x < W):
            raise ValueError(f"--query-pixels ({y}, {x}) is outside the {H}x{W} model input")
        out.append((y * h // H, x * w // W))
    return out


def plot_pixel_maps(
    model: nn.Module,
    maps: Mapping[str, Tensor],
    row: int,
    image: Tensor,
    pixels: Optional[Sequence[Tuple[int, int]]],
    out_stem: Path,
) -> List[Path]:
    """For each captured pixel-attention module of ``model``: where ``pixels`` (input-image ``(y, x)``; default the
    centre) attend, over ``image (3, H, W)`` (row ``row`` of the batch); one PNG ``<out_stem>_<module>.png`` each."""
    from ...layers import LocalSelfAttention2d, NonLocalBlock2d

    H, W = image.shape[-2:]
    written = []
    for name, weights in maps.items():
        module = model.get_submodule(name) if name != "self" else model
        if not isinstance(module, (LocalSelfAttention2d, NonLocalBlock2d)):
            continue
        grid = query_grid_size(weights.shape[2], (H, W))
        cells = to_query_grid(pixels or [(H // 2, W // 2)], (H, W), grid)
        k = module.kernel_size if isinstance(module, LocalSelfAttention2d) else None
        path = Path(f"{out_stem}_{name.replace('.', '_')}.png")
        written.append(
            plot_pixel_attention(
                weights[row], grid, cells, path, kernel_size=k, image=image, title=f"{name} (grid {grid[0]}x{grid[1]})"
            )
        )
    return written
