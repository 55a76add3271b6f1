"""Kernels of :class:`~vision_attn.layers.LocalSelfAttention2d`: exact k x k neighbourhood attention with relative terms.

Every kernel computes, for the query at pixel ``i`` and each key ``j`` of its ``k x k`` window inside the image,
the logit ``(q_i . k_j + q_i . r[dy, dx]) * scale`` (``r`` = row embedding on the first ``d // 2`` channels, column
embedding on the rest) and a softmax over those keys only. They differ in how:

* ``halo`` (in the layer): blocks of queries attend to their block plus a halo through the core's fused SDPA; the
  relative term rides inside the dot product as ``Kh + Kw`` extra columns, and the values are zero-padded to
  that width because the fused kernels need equal head sizes (``d = 8``, 7x7 blocks, 7x7 window: 8 -> 34). Blocks
  are balanced (:func:`_halo_layout`), and an axis that is one block has no halo (:func:`_halo_radius`).
* ``unfold``: each pixel's ``k*k`` keys and values are materialised (``F.unfold``); one query per pixel through the
  core's SDPA with the relative term as an additive mask. Head size ``d``, no padding; ``k*k`` x the key memory.
* ``flex``: PyTorch's FlexAttention over the ``H*W`` sequence: a block mask skips the key blocks no query of a
  query block can see, ``score_mod`` adds the relative term (through the core's :func:`flex_attention`). Head size
  ``d``, no padding. torch has no CPU backward for it: on CPU it serves inference only (compiled on first use per shape).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention import attention_with_weights, flex_attention

__all__ = [
    "LOCAL_BACKENDS",
    "relative_logits",
    "halo_local_attention",
    "unfold_local_attention",
    "flex_local_attention",
    "flex_supported",
]

LOCAL_BACKENDS = ("auto", "halo", "flex", "unfold")


def relative_logits(q: Tensor, rel_h: Tensor, rel_w: Tensor) -> Tuple[Tensor, Tensor]:
    """``q (B, heads, N, d)``, ``rel_h (heads, k, d // 2)``, ``rel_w (heads, k, d - d // 2)`` -> the row and column
    terms ``q . r_h[dy]`` and ``q . r_w[dx]``, each ``(B, heads, N, k)`` indexed by ``dy + k // 2`` / ``dx + k // 2``."""
    half = rel_h.shape[-1]
    rows = torch.einsum("bhnc,hkc->bhnk", q[..., :half], rel_h)
    cols = torch.einsum("bhnc,hkc->bhnk", q[..., half:], rel_w)
    return rows, cols


def _halo_layout(height: int, width: int, block_size: int) -> Tuple[int, int, int, int]:
    """Block sides ``(bh, bw)`` and block counts ``(nbh, nbw)`` for an ``height x width`` map: as few blocks of side
    at most ``block_size`` as cover it, all of one side, so the padding is under one pixel per block (28 px with
    ``block_size=8``: 4 blocks of 7, not 4 of 8 with 4 rows of padding, 1.3x the work)."""
    nbh, nbw = -(-height // block_size), -(-width // block_size)
    return -(-height // nbh), -(-width // nbw), nbh, nbw


def _halo_radius(blocks: int, r: int) -> int:
    """The halo of the blocks along one axis: ``r`` pixels on each side, none where one block is the whole axis
    (all it would hold is padding outside the image, always masked: a 7x7 map attends to 49 keys, not 13 x 13)."""
    return r if blocks > 1 else 0


def _shifted(rel: Tensor, block: int, halo: int) -> Tensor:
    """``rel (heads, k, c)`` indexed by offset -> ``(heads, block, block + 2 * halo, c)`` indexed by (query, halo key),
    the halo keys starting ``halo`` pixels before the block.

    Entry ``[h, i, j]`` is ``rel[h, j - halo - i + k // 2]`` where that offset is in the window, else 0 (those keys
    are masked anyway).
    """
    k = rel.shape[1]
    offset = (
        torch.arange(block + 2 * halo, device=rel.device)[None, :]
        - torch.arange(block, device=rel.device)[:, None]
        + (k // 2 - halo)
    )
    inside = (offset >= 0) & (offset < k)
    out = rel[:, offset.clamp(0, k - 1)]  # (heads, block, block + 2 * halo, c)
    return out * inside[None, :, :, None].to(rel.dtype)


def _halo_axis(b: int, nb: int, size: int, r: int, device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
    """Along one axis (halo ``h`` = :func:`_halo_radius`): which halo keys are near each query ``(nb, b, b + 2h)``,
    inside the map ``(nb, b + 2h)``, and which queries are inside the map ``(nb, b)``."""
    h = _halo_radius(nb, r)
    start = torch.arange(nb, device=device)[:, None] * b
    q = start + torch.arange(b, device=device)  # (nb, b) absolute query positions
    k = start - h + torch.arange(b + 2 * h, device=device)  # (nb, b + 2h) absolute key positions
    near = (k[:, None, :] - q[:, :, None]).abs() <= r  # (nb, b, b + 2r)
    return near, (k >= 0) & (k < size), q < size


def _halo_window_mask(height: int, width: int, kernel_size: int, block_size: int, device: torch.device) -> Tensor:
    """``(blocks, 1, bh*bw, Kh*Kw)`` bool, SDPA meaning (True = may attend): the key is in the query's window
    and inside the image (queries in the padding, whose outputs are dropped, see their whole window)."""
    r = kernel_size // 2
    bh, bw, nbh, nbw = _halo_layout(height, width, block_size)
    near_y, key_in_y, q_in_y = _halo_axis(bh, nbh, height, r, device)
    near_x, key_in_x, q_in_x = _halo_axis(bw, nbw, width, r, device)
    # index order: (by, bx, i, j, ky, kx)
    near = near_y[:, None, :, None, :, None] & near_x[None, :, None, :, None, :]
    key_in = key_in_y[:, None, None, None, :, None] & key_in_x[None, :, None, None, None, :]
    q_in = q_in_y[:, None, :, None, None, None] & q_in_x[None, :, None, :, None, None]
    allowed = near & (key_in | ~q_in)
    return allowed.reshape(nbh * nbw, 1, bh * bw, near_y.shape[-1] * near_x.shape[-1])


def _halo_window_weights(
    weights: Tensor, batch: int, heads: int, height: int, width: int, kernel_size: int, block_size: int
) -> Tensor:
    """Blocked weights ``(blocks, B*heads, bh*bw, Kh*Kw)`` -> per-pixel window weights ``(B, heads, H*W, k*k)``."""
    k, r = kernel_size, kernel_size // 2
    bh, bw, nbh, nbw = _halo_layout(height, width, block_size)
    hy, hx = _halo_radius(nbh, r), _halo_radius(nbw, r)
    Kh, Kw = bh + 2 * hy, bw + 2 * hx
    dev = weights.device
    i = torch.arange(bh, device=dev).repeat_interleave(bw)  # query row in block
    j = torch.arange(bw, device=dev).repeat(bh)  # query column in block
    oy = torch.arange(k, device=dev).repeat_interleave(k)
    ox = torch.arange(k, device=dev).repeat(k)
    ky = i[:, None] + oy[None, :] - (r - hy)  # (bh*bw, k*k) halo row and column of each offset
    kx = j[:, None] + ox[None, :] - (r - hx)
    held = (ky >= 0) & (ky < Kh) & (kx >= 0) & (kx < Kw)  # not held: outside the image (the axis is one block)
    idx = (ky.clamp(0, Kh - 1) * Kw + kx.clamp(0, Kw - 1)).expand(weights.shape[0], weights.shape[1], -1, -1)
    w = weights.gather(-1, idx) * held.to(weights.dtype)
    w = w.reshape(nbh, nbw, batch, heads, bh, bw, k * k).permute(2, 3, 0, 4, 1, 5, 6)
    w = w.reshape(batch, heads, nbh * bh, nbw * bw, k * k)[:, :, :height, :width]
    return w.reshape(batch, heads, height * width, k * k)


def halo_local_attention(
    qkv: Tensor,
    rel_h: Tensor,
    rel_w: Tensor,
    num_heads: int,
    block_size: int,
    need_weights: bool = False,
) -> Tuple[Tensor, Optional[Tensor]]:
    """The ``halo`` kernel: ``qkv (B, 3C, H, W)`` (queries, keys, values stacked on channels) -> ``(B, C, H, W)``, and
    with ``need_weights`` the window weights ``(B, heads, H*W, k*k)`` (offsets row-major, 0 outside the image)."""
    B, C3, H, W = qkv.shape
    C = C3 // 3
    nh, kernel = num_heads, rel_h.shape[1]
    d, r = C // nh, kernel // 2
    bh, bw, nbh, nbw = _halo_layout(H, W, block_size)
    hy, hx = _halo_radius(nbh, r), _halo_radius(nbw, r)
    Hp, Wp, Kh, Kw = nbh * bh, nbw * bw, bh + 2 * hy, bw + 2 * hx
    nblocks = nbh * nbw
    q, k, v = qkv.chunk(3, dim=1)

    # Queries: (B, C, Hp, Wp) -> (nbh, nbw, B, heads, bh, bw, d).
    q = F.pad(q, (0, Wp - W, 0, Hp - H)).reshape(B, nh, d, nbh, bh, nbw, bw).permute(3, 5, 0, 1, 4, 6, 2)
    dr = d // 2
    rows = torch.einsum("abnhijc,hikc->abnhijk", q[..., :dr], _shifted(rel_h, bh, hy))
    cols = torch.einsum("abnhijc,hjkc->abnhijk", q[..., dr:], _shifted(rel_w, bw, hx))
    q = torch.cat([q, rows, cols], dim=-1).reshape(nblocks, B * nh, bh * bw, d + Kh + Kw)

    # Keys and values: each block's (bh + 2hy) x (bw + 2hx) halo; the zero padding is masked below.
    kv = F.pad(torch.cat([k, v], dim=1), (hx, hx + Wp - W, hy, hy + Hp - H))
    kv = kv.unfold(2, Kh, bh).unfold(3, Kw, bw)  # (B, 2C, nbh, nbw, Kh, Kw), a view
    kv = kv.reshape(B, 2, nh, d, nbh, nbw, Kh, Kw).permute(1, 4, 5, 0, 2, 6, 7, 3)  # still a view
    kv = kv.reshape(2, nblocks, B * nh, Kh * Kw, d)  # the one copy: ((b + 2h) / b)^2 x the keys and values
    k, v = kv.unbind(0)
    # One-hot code of each halo key's row and column: q'.k' adds the query's row and column terms.
    code = torch.cat(
        [
            torch.eye(Kh, dtype=k.dtype, device=k.device).repeat_interleave(Kw, dim=0),
            torch.eye(Kw, dtype=k.dtype, device=k.device).repeat(Kh, 1),
        ],
        dim=1,
    )  # (Kh*Kw, Kh + Kw)
    k = torch.cat([k, code.expand(nblocks, B * nh, -1, -1)], dim=-1)

    mask = _halo_window_mask(H, W, kernel, block_size, qkv.device)
    out, weights = attention_with_weights(q, k, v, mask, need_weights=need_weights, scale=d**-0.5)
    out = out.reshape(nbh, nbw, B, nh, bh, bw, d).permute(2, 3, 6, 0, 4, 1, 5).reshape(B, C, Hp, Wp)[:, :, :H, :W]
    if weights is not None:
        weights = _halo_window_weights(weights, B, nh, H, W, kernel, block_size)
    return out, weights


def unfold_local_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rel_h: Tensor,
    rel_w: Tensor,
    height: int,
    width: int,
    scale: float,
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
    out, weights = attention_with_weights(
        q.unsqueeze(-2), windows(k), windows(v), mask, need_weights=need_weights, scale=scale
    )
    if weights is not None:
        return out.squeeze(-2), weights.squeeze(-2)
    return out.squeeze(-2)


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
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rel_h: Tensor,
    rel_w: Tensor,
    height: int,
    width: int,
    scale: float,
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
