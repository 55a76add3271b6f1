"""Box helpers for the detector, on ``torchvision.ops`` (which already has conversion, IoU and GIoU).

Formats: ``cxcywh`` (centre, width, height; DETR's output, normalised to [0, 1]), ``xyxy`` (corners) and
``xywh`` (top-left corner and size; COCO's). Every function takes boxes ``(..., 4)``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou, generalized_box_iou

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_xywh_to_xyxy",
    "box_xyxy_to_xywh",
    "box_iou",
    "generalized_box_iou",
    "scale_boxes",
]


def _convert(boxes: Tensor, src: str, dst: str) -> Tensor:
    if boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (..., 4); got {tuple(boxes.shape)}")
    # torchvision's box_convert is written for (N, 4); flatten any leading dimensions
    return box_convert(boxes.reshape(-1, 4), src, dst).reshape(boxes.shape)


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` centre/size -> corners."""
    return _convert(boxes, "cxcywh", "xyxy")


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` corners -> centre/size."""
    return _convert(boxes, "xyxy", "cxcywh")


def box_xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` COCO's top-left/size -> corners."""
    return _convert(boxes, "xywh", "xyxy")


def box_xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` corners -> COCO's top-left/size."""
    return _convert(boxes, "xyxy", "xywh")


def scale_boxes(boxes: Tensor, sizes: Tensor) -> Tensor:
    """Normalised boxes ``(B, N, 4)`` (any format whose coordinates alternate x, y) -> pixels.

    ``sizes``: ``(B, 2)`` image ``(height, width)`` per batch element.
    """
    h, w = sizes.to(boxes.dtype).unbind(-1)
    scale = torch.stack([w, h, w, h], dim=-1)  # (B, 4)
    return boxes * scale[:, None, :]
