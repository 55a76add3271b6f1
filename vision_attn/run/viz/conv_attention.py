"""Where the heads of a convolution-as-attention layer look: one panel per head, laid out like the kernel.

``python -m vision_attn.run.viz.conv_attention docs/conv_as_attention.png`` draws it for a 3x3 convolution
turned into 9 attention heads by :func:`vision_attn.layers.attention_from_conv`, on a built-in shapes image.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from ...attention import capture_attention
from ...layers import ConvAttention2d, attention_from_conv
from .style import ATTENTION_CMAP, new_figure, save_figure, to_display_rgb

__all__ = ["conv_attention_maps", "plot_conv_attention"]


def conv_attention_maps(layer: ConvAttention2d, x: Tensor, query: Tuple[int, int]) -> Tensor:
    """Each head's attention from the pixel ``query = (y, x)`` of ``x (1, C_in, H, W)``, as images
    ``(heads, H + 2r, W + 2r)`` on the zero-padded map (``r = k // 2``)."""
    _, _, H, W = x.shape
    y, x0 = query
    if not (0 <= y < H and 0 <= x0 < W):
        raise ValueError(f"query pixel (y, x) = {query} is outside the {H}x{W} map")
    r = layer.kernel_size // 2
    with capture_attention(layer) as maps, torch.no_grad():
        layer(x)
    return maps["self"][0, :, y * W + x0].reshape(layer.num_heads, H + 2 * r, W + 2 * r).float().cpu()


def _default_image() -> Tensor:
    from ...data.synthetic import render_shapes

    images, _ = render_shapes(1, 32, seed=1)
    # 16 px so each pixel of the one-hot maps is visible
    return F.avg_pool2d(torch.from_numpy(images).float().div(127.5).sub(1), 2)[0]


def plot_conv_attention(
    path: Union[str, Path],
    conv: Optional[nn.Conv2d] = None,
    image: Optional[Tensor] = None,
    query: Tuple[int, int] = (0, 5),
    alpha: float = 20.0,
) -> Path:
    """Convert ``conv`` (default: a seeded random ``Conv2d(3, 8, 3, padding=1)``) and draw, for the pixel ``query``
    of ``image (3, H, W)`` (default: a 16 px built-in shapes image), where each head attends; save a PNG.

    The panels sit where their offsets sit in the kernel; each shows the zero-padded input (the image inside the
    white frame), the head's attention (the coloured pixel: weight 1) and the query (red cross). The title gives the largest
    difference between the convolution's and the attention's outputs on that image.
    """
    if conv is None:
        torch.manual_seed(0)
        conv = nn.Conv2d(3, 8, 3, padding=1)
    image = _default_image() if image is None else image.detach().float()
    layer = attention_from_conv(conv, alpha=alpha)
    x = image[None].to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        want = conv(x)
        gap = float((layer(x) - want).abs().max() / want.abs().max())
    maps = conv_attention_maps(layer, x, query)
    k, r = layer.kernel_size, layer.kernel_size // 2
    _, H, W = image.shape
    backdrop = to_display_rgb(F.pad(image.cpu(), (r, r, r, r), value=float(image.min())))
    fig, axes = new_figure(k, k, size=(1.7, 1.7), title_space=True)
    offsets = layer.offsets.detach().round().int().tolist()
    for h in range(layer.num_heads):
        ax = axes[h // k][h % k]
        ax.imshow(backdrop.mean(-1).numpy(), cmap="gray", vmin=-0.2, vmax=1.6, interpolation="nearest")  # dimmed
        # only the attended pixels are coloured, so the image stays visible around them
        attended = np.ma.masked_less(maps[h].numpy(), 1e-3)
        ax.imshow(attended, cmap=ATTENTION_CMAP, vmin=0, vmax=1, interpolation="nearest")
        ax.add_patch(Rectangle((r - 0.5, r - 0.5), W, H, fill=False, edgecolor="white", linewidth=1))
        ax.plot([query[1] + r], [query[0] + r], marker="x", color="red", markersize=6, mew=1.5)
        ax.set_xticks([])
        ax.set_yticks([])
        dy, dx = offsets[h]
        ax.set_title(f"head {h}: offset ({dy:+d}, {dx:+d})", fontsize=7)
    fig.suptitle(
        f"a {k}x{k} conv as {k * k} attention heads: query pixel {tuple(query)}\n"
        f"max |attention - conv| / max |conv| = {gap:.1e}",
        fontsize=8,
    )
    return save_figure(fig, path)


if __name__ == "__main__":
    print(plot_conv_attention(sys.argv[1] if len(sys.argv) > 1 else "docs/conv_as_attention.png"))
