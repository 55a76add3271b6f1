"""Batching images of different sizes: zero-pad each at the bottom and right, and mark the padding (DETR's layout)."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["pad_images_to_batch"]


def pad_images_to_batch(images: Sequence[Tensor], channels: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Stack ``(C, H_i, W_i)`` images into one zero-padded batch and its padding mask.

    Args:
        images: at least one ``(C, H_i, W_i)`` tensor; each is placed at the top left of the batch.
        channels: the ``C`` every image must have (default: the first image's).

    Returns:
        ``batch (B, C, H, W)`` (H, W the largest height and width; dtype and device of ``images[0]``) and
        ``mask (B, H, W)`` bool, True on padding pixels.
    """
    if len(images) == 0:
        raise ValueError("images is empty; expected at least one (C, H, W) tensor")
    first = images[0]
    c = (
        channels
        if channels is not None
        else (first.shape[0] if isinstance(first, Tensor) and first.dim() == 3 else "C")
    )
    for i, im in enumerate(images):
        if not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != c:
            shape = tuple(im.shape) if isinstance(im, Tensor) else type(im).__name__
            raise ValueError(f"images[{i}] has shape {shape}; expected ({c}, H, W)")
    h = max(im.shape[1] for im in images)
    w = max(im.shape[2] for im in images)
    batch = first.new_zeros((len(images), first.shape[0], h, w))
    mask = torch.ones((len(images), h, w), dtype=torch.bool, device=first.device)
    for im, b, m in zip(images, batch, mask):
        b[:, : im.shape[1], : im.shape[2]].copy_(im)
        m[: im.shape[1], : im.shape[2]] = False
    return batch, mask
