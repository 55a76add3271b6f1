"""Floor 1: pure tensor helpers: box conversions and IoU (on torchvision.ops), padding images into one batch."""

from .boxes import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xywh_to_xyxy,
    box_xyxy_to_cxcywh,
    box_xyxy_to_xywh,
    generalized_box_iou,
    scale_boxes,
)
from .padding import pad_images_to_batch

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_xywh_to_xyxy",
    "box_xyxy_to_xywh",
    "box_iou",
    "generalized_box_iou",
    "scale_boxes",
    "pad_images_to_batch",
]
