"""Kernels of :class:`~vision_attn.layers.LocalSelfAttention2d`: exact k x k neighbourhood attention with relative terms.

Every kernel computes, for the query at pixel ``i`` and each key ``j`` of its ``k x k`` window inside the image,
the logit ``(q_i . k_j + q_i . r[dy, dx]) * scale`` (``r`` = row embedding on the first ``d // 2`` channels, column
embedding on the rest) and a softmax over those keys only. They differ in how:

* ``halo`` (in the layer): blocks of queries attend to their block plus a halo through the core's fused SDPA; the
  relative term rides inside the dot product as ``d + Kh + Kw`` extra columns, and the values are zero-padded to
  that width because the fused kernels need equal head sizes (``d = 8``, 8x8 blocks, 7x7 window: 8 -> 36).
* ``unfold``: each pixel's ``k*k`` keys and values are materialised (``F.unfold``); one query per pixel through the
  core's SDPA with the relative term as an additive mask. Head size ``d``, no padding; ``k*k`` x the key memory.
* ``flex``: PyTorch's FlexAttention over the ``H*W`` sequence: a block mask skips the key blocks no query of a
  query block can see, ``score_mod`` adds the relative term (through the core's :func:`flex_attention`). Head size
  ``d``, no padding. torch has no CPU backward for it: on CPU it serves inference only (compiled on first use per shape).
"""
from __future__ import annotations

from typing import Dict, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention import flex_attention, scaled_dot_product_attention

__all__ = ["LOCAL_BACKENDS", "relative_logits", "unfold_local_attention", "flex_local_attention", "flex_supported"]

LOCAL_BACKENDS = ("auto", "halo", "flex", "unfold")


def relative_logits(q: Tensor, rel_h: Tensor, rel_w: Tensor) -> Tuple[Tensor, Tensor]:
    """``q (B, heads, N, d)``, ``rel_h (heads, k, d // 2)``, ``rel_w (heads, k, d - d // 2)`` -> the row and column
    terms ``q . r_h[dy]`` and ``q . r_w[dx]``, each ``(B, heads, N, k)`` indexed by ``dy + k // 2`` / ``dx + k // 2``."""
    half = rel_h.shape[-1]
    rows = torch.einsum("bhnc,hkc->bhnk", q[..., :half], rel_h)
    cols = torch.einsum("bhnc,hkc->bhnk", q[..., half:], rel_w)
    return rows, cols


def unfold_local_attention(
    q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, height: int, width: int, scale: float,
    need_weights: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """``q, k, v (B, heads, H*W, d)`` -> ``(B, heads, H*W, d)`` (and the window weights ``(B, heads, H*W, k*k)``,
    offsets row-major, 0 outside the image), every pixel's window materialised."""
    B, nh, N, d = q.shape
    kernel = rel_h.shape[1]
    r = kernel // 2

    def windows(t: Tensor) -> Tensor:  # (B, heads, N, d) -> (B, heads, N, k*k, d)
        t = t.transpose(-1, -2).reshape(B, nh * d, height, width)
        t = F.unfold(t, kernel, padding=r).view(B, nh, d, kernel * kernel, N)
        return t.permute(0, 1, 4, 3, 2)

    inside = F.unfold(q.new_ones(1, 1, height, width), kernel, padding=r).view(1, 1, kernel * kernel, N)
    inside = inside.transpose(-1, -2).unsqueeze(-2) > 0  # (1, 1, N, 1, k*k)
    rows, cols = relative_logits(q, rel_h, rel_w)
    bias = (rows[..., :, None] + cols[..., None, :]).reshape(B, nh, N, 1, kernel * kernel) * scale
    mask = bias.masked_fill(~inside, float("-inf"))
    res = scaled_dot_product_attention(q.unsqueeze(-2), windows(k), windows(v), mask, need_weights=need_weights, scale=scale)
    if need_weights:
        out, weights = res
        return out.squeeze(-2), weights.squeeze(-2)
    return res.squeeze(-2)


def flex_supported(device: torch.device, needs_grad: bool) -> bool:
    """Whether FlexAttention can run here: it exists in this torch, and a backward is possible if one is needed."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return device.type == "cuda" or not needs_grad


_BLOCK_MASKS: Dict[Tuple[int, int, int, str], object] = {}


def _neighbourhood_block_mask(height: int, width: int, kernel: int, device: torch.device):
    """FlexAttention's block mask of the ``kernel x kernel`` windows over a row-major ``height x width`` grid (cached)."""
    from torch.nn.attention.flex_attention import create_block_mask

    key = (height, width, kernel, str(device))
    if key not in _BLOCK_MASKS:
        r = kernel // 2

        def near(b, h, qi, ki):
            return ((ki // width - qi // width).abs() <= r) & ((ki % width - qi % width).abs() <= r)

        n = height * width
        _BLOCK_MASKS[key] = create_block_mask(near, None, None, n, n, device=device)
    return _BLOCK_MASKS[key]


def flex_local_attention(
    q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, height: int, width: int, scale: float,
) -> Tensor:
    """``q, k, v (B, heads, H*W, d)`` -> ``(B, heads, H*W, d)`` through FlexAttention (see the module docstring)."""
    kernel = rel_h.shape[1]
    r = kernel // 2
    rows, cols = relative_logits(q, rel_h, rel_w)
    rows, cols = rows * scale, cols * scale  # score_mod sees the already scaled q . k

    def relative(score, b, h, qi, ki):
        dy = (ki // width - qi // width + r).clamp(0, kernel - 1)
        dx = (ki % width - qi % width + r).clamp(0, kernel - 1)
        return score + rows[b, h, qi, dy] + cols[b, h, qi, dx]

    block_mask = _neighbourhood_block_mask(height, width, kernel, q.device)
    return flex_attention(q, k, v, score_mod=relative, block_mask=block_mask, scale=scale)
