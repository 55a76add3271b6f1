"""Attention masks on a 2-D token grid (``nn.MultiheadAttention`` meaning: bool True = may not attend).

Global attention is no mask; a k x k local window is "truncated" self-attention, the receptive field of a
k x k convolution; an adjacency mask lets tokens attend only along the edges of a graph.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["local_window_mask", "adjacency_mask", "with_prefix_tokens"]


def local_window_mask(height: int, width: int, kernel_size: int, device=None) -> Tensor:
    """Mask of the k x k window centred on each query of a ``height x width`` grid.

    Returns:
        ``(H*W, H*W)`` bool, True where key is outside the query's window (may not attend).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number; got {kernel_size}")
    if height < 1 or width < 1:
        raise ValueError(f"grid must be at least 1x1; got {height}x{width}")
    r = kernel_size // 2
    ys = torch.arange(height, device=device).repeat_interleave(width)
    xs = torch.arange(width, device=device).repeat(height)
    far_y = (ys[:, None] - ys[None, :]).abs() > r
    far_x = (xs[:, None] - xs[None, :]).abs() > r
    return far_y | far_x


def adjacency_mask(adjacency: Tensor, self_loops: bool = True) -> Tensor:
    """Mask letting each node attend only to its neighbours.

    Args:
        adjacency: ``(N, N)`` or ``(B, N, N)``, nonzero/True where query i may attend to key j.
        self_loops: also let every node attend to itself (keeps isolated nodes well defined).

    Returns:
        same shape, bool, True = may not attend. A ``(B, N, N)`` mask broadcasts over heads when
        passed as ``attn_mask=mask[:, None]``.
    """
    if adjacency.dim() not in (2, 3) or adjacency.shape[-1] != adjacency.shape[-2]:
        raise ValueError(f"adjacency has shape {tuple(adjacency.shape)}; expected (N, N) or (B, N, N)")
    allowed = adjacency.bool()
    if self_loops:
        eye = torch.eye(adjacency.shape[-1], dtype=torch.bool, device=adjacency.device)
        allowed = allowed | eye
    return ~allowed


def with_prefix_tokens(mask: Tensor, num_prefix_tokens: int) -> Tensor:
    """Extend an ``(N, N)`` grid mask to ``(P + N, P + N)``: prefix tokens (class token) see and are seen by all."""
    if num_prefix_tokens == 0:
        return mask
    n = mask.shape[-1]
    out = torch.zeros(num_prefix_tokens + n, num_prefix_tokens + n, dtype=torch.bool, device=mask.device)
    out[num_prefix_tokens:, num_prefix_tokens:] = mask
    return out
