"""Position encodings: learned absolute (with resampling to another grid), DETR's 2-D sine, or none.

Without positions self-attention is permutation-equivariant: every token is "as near as any other".
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from timm.layers import resample_abs_pos_embed as _timm_resample
from torch import Tensor

__all__ = ["POS_EMBED_KINDS", "resample_abs_pos_embed", "sine_position_encoding_2d", "sine_position_grid"]

POS_EMBED_KINDS = ("learned", "sine", "none")


def resample_abs_pos_embed(
    pos_embed: Tensor,
    new_size: Sequence[int],
    old_size: Optional[Sequence[int]] = None,
    num_prefix_tokens: int = 1,
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> Tensor:
    """Resample learned absolute positions to another patch grid, keeping prefix (class) tokens as they are.

    timm's own resampling (bicubic, antialiased), behind checks that name what is wrong with the input.

    Args:
        pos_embed: ``(1, P + h*w, D)`` with ``P = num_prefix_tokens``.
        new_size: target grid ``(H', W')``.
        old_size: source grid ``(h, w)``; default: square.

    Returns:
        ``(1, P + H'*W', D)``.
    """
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed has shape {tuple(pos_embed.shape)}; expected (1, P + h*w, D)")
    new_size = tuple(int(s) for s in new_size)
    n_grid = pos_embed.shape[1] - num_prefix_tokens
    if old_size is None:
        side = int(math.isqrt(n_grid))
        if side * side != n_grid:
            raise ValueError(
                f"pos_embed holds {n_grid} grid positions (after {num_prefix_tokens} prefix tokens), "
                "which is not a square grid; pass old_size=(h, w)"
            )
        old_size = (side, side)
    old_size = tuple(int(s) for s in old_size)
    if old_size[0] * old_size[1] != n_grid:
        raise ValueError(f"old_size {old_size} does not match the {n_grid} grid positions in pos_embed")
    if new_size == old_size:
        return pos_embed
    return _timm_resample(
        pos_embed,
        list(new_size),
        list(old_size),
        num_prefix_tokens=num_prefix_tokens,
        interpolation=interpolation,
        antialias=antialias,
    )


def sine_position_encoding_2d(
    not_mask: Tensor,
    num_pos_feats: int = 128,
    temperature: float = 10000.0,
    normalize: bool = True,
    scale: float = 2 * math.pi,
) -> Tensor:
    """DETR's 2-D sine encoding of pixel positions, aware of padding.

    Args:
        not_mask: ``(B, H, W)`` bool, True on real (non-padded) pixels.
        num_pos_feats: features per axis; the output has ``2 * num_pos_feats`` channels (y first, then x).
        normalize: scale positions to ``[0, scale]`` over each image's real extent.

    Returns:
        ``(B, 2 * num_pos_feats, H, W)`` float32.
    """
    if not_mask.dim() != 3:
        raise ValueError(f"not_mask has shape {tuple(not_mask.shape)}; expected (B, H, W)")
    y_embed = not_mask.cumsum(1, dtype=torch.float32)
    x_embed = not_mask.cumsum(2, dtype=torch.float32)
    if normalize:
        eps = 1e-6
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=not_mask.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def sine_position_grid(height: int, width: int, dim: int, device=None, temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sine positions for an unpadded ``height x width`` token grid.

    Returns:
        ``(height * width, dim)`` float32, row-major like a flattened patch grid.
    """
    if dim % 4 != 0:
        raise ValueError(f"sine positions need a width divisible by 4; got dim={dim}")
    not_mask = torch.ones(1, height, width, dtype=torch.bool, device=device)
    pos = sine_position_encoding_2d(not_mask, num_pos_feats=dim // 2, temperature=temperature)
    return pos.flatten(2).transpose(1, 2)[0]


def grid_size(n_tokens: int) -> Tuple[int, int]:
    """The square grid ``(s, s)`` holding ``n_tokens`` tokens."""
    side = int(math.isqrt(n_tokens))
    if side * side != n_tokens:
        raise ValueError(f"{n_tokens} tokens do not form a square grid")
    return side, side
