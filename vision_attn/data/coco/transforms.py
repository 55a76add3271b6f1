"""DETR's augmentations on albumentations: multi-scale short-side resize, DETR's random crop, normalisation.

Boxes travel as pixel corners (``pascal_voc``) with a ``labels`` field; a crop that leaves a box no area drops it with
its label. Both pipelines end in ``ToTensorV2``: the image comes out as a float tensor ``(3, H, W)``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop
from albumentations.pytorch import ToTensorV2

from ..transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "DETR_SCALES",
    "ResizeShortSide",
    "RandomSizeCrop",
    "detr_train_transform",
    "detr_eval_transform",
    "detr_predict_transform",
]

DETR_SCALES = tuple(range(480, 801, 32))


def _short_side_size(h: int, w: int, size: int, max_size: Optional[int]) -> Tuple[int, int]:
    """DETR's ``get_size``: short side to ``size`` unless the long side would exceed ``max_size``."""
    if max_size is not None:
        lo, hi = float(min(h, w)), float(max(h, w))
        if hi / lo * size > max_size:
            size = int(round(max_size * lo / hi))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


class ResizeShortSide(A.DualTransform):
    """Resize so the short side is one of ``sizes`` (chosen at random) and the long side at most ``max_size``."""

    def __init__(
        self,
        sizes: Sequence[int],
        max_size: Optional[int] = None,
        interpolation: int = cv2.INTER_LINEAR,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.sizes, self.max_size, self.interpolation = [int(s) for s in sizes], max_size, interpolation

    def get_params_dependent_on_data(self, params: Dict[str, Any], data: Dict[str, Any]) -> Dict[str, Any]:
        h, w = params["shape"][:2]
        return {"target_hw": _short_side_size(h, w, self.py_random.choice(self.sizes), self.max_size)}

    def apply(self, img: np.ndarray, target_hw: Tuple[int, int], **params: Any) -> np.ndarray:
        if img.shape[:2] == tuple(target_hw):
            return img
        return cv2.resize(img, (target_hw[1], target_hw[0]), interpolation=self.interpolation)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes  # albumentations keeps boxes normalised: a resize leaves them unchanged

    def get_transform_init_args_names(self) -> Tuple[str, ...]:
        return ("sizes", "max_size", "interpolation")


class RandomSizeCrop(BaseCrop):
    """DETR's crop: width and height uniform in ``[min_size, min(side, max_size)]``, at a random position."""

    def __init__(self, min_size: int, max_size: int, p: float = 1.0):
        super().__init__(p=p)
        self.min_size, self.max_size = int(min_size), int(max_size)

    def get_params_dependent_on_data(self, params: Dict[str, Any], data: Dict[str, Any]) -> Dict[str, Any]:
        h, w = params["shape"][:2]
        ch = self.py_random.randint(min(h, self.min_size), max(min(h, self.min_size), min(h, self.max_size)))
        cw = self.py_random.randint(min(w, self.min_size), max(min(w, self.min_size), min(w, self.max_size)))
        y0, x0 = self.py_random.randint(0, h - ch), self.py_random.randint(0, w - cw)
        return {"crop_coords": (x0, y0, x0 + cw, y0 + ch)}

    def get_transform_init_args_names(self) -> Tuple[str, ...]:
        return ("min_size", "max_size")


def _bbox_params() -> A.BboxParams:
    # pixel corners; boxes cut down to nothing by a crop are dropped with their labels
    return A.BboxParams(format="pascal_voc", label_fields=["labels"], min_area=0.0, min_visibility=0.0, clip=True)


def detr_train_transform(
    scales: Sequence[int] = DETR_SCALES,
    max_size: Optional[int] = 1333,
    random_crop: bool = True,
    crop_scales: Sequence[int] = (400, 500, 600),
    crop_size: Tuple[int, int] = (384, 600),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """DETR's training augmentation: flip, then either a multi-scale resize, or (half the time, if
    ``random_crop``) resize to ``crop_scales`` -> random crop of ``crop_size`` -> multi-scale resize; normalise."""
    resize = ResizeShortSide(scales, max_size)
    if random_crop:
        crop_branch = A.Sequential(
            [ResizeShortSide(crop_scales), RandomSizeCrop(*crop_size), ResizeShortSide(scales, max_size)]
        )
        resize = A.OneOf([resize, crop_branch], p=1.0)
    ops = [A.HorizontalFlip(p=0.5), resize, A.Normalize(mean=tuple(mean), std=tuple(std)), ToTensorV2()]
    return A.Compose(ops, bbox_params=_bbox_params())


def detr_eval_transform(
    size: int = 800,
    max_size: Optional[int] = 1333,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """Evaluation: short side to ``size`` (long side at most ``max_size``), normalise."""
    ops = [ResizeShortSide([size], max_size), A.Normalize(mean=tuple(mean), std=tuple(std)), ToTensorV2()]
    return A.Compose(ops, bbox_params=_bbox_params())


def detr_predict_transform(
    size: int = 800,
    max_size: Optional[int] = 1333,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """:func:`detr_eval_transform` for images without boxes (predicting on your own files)."""
    return A.Compose([ResizeShortSide([size], max_size), A.Normalize(mean=tuple(mean), std=tuple(std)), ToTensorV2()])
