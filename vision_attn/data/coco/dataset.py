"""One COCO-format split as a Dataset, and the collate that pads a batch of differently sized images.

Each item is ``(image (3, H, W) float, target dict)``; a target holds ``labels (N,)`` int64 in ``[0, num_classes)``,
``boxes (N, 4)`` float normalised ``(cx, cy, w, h)`` of the transformed, unpadded image (crowd boxes left out),
``image_id`` (the original COCO id), ``orig_size (2,) = (h, w)`` of the file and ``size (2,)`` after transforms.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ...ops import pad_images_to_batch
from ..transforms import reseed_from_torch
from .validate import COCOFormatError, load_coco_annotations

__all__ = ["COCODetection", "detection_collate"]


def _category_mapping(categories: List[Dict[str, Any]], label_mapping: str) -> Tuple[List[int], List[str]]:
    """``label_to_category_id`` and the label names (``""`` for labels that are no category)."""
    ids = sorted(c["id"] for c in categories)
    names = {c["id"]: str(c["name"]) for c in categories}
    if label_mapping == "contiguous":
        return ids, [names[i] for i in ids]
    if label_mapping == "category_id":
        top = max(ids) + 1 if ids else 0
        return list(range(top)), [names.get(i, "") for i in range(top)]
    raise ValueError(f"label_mapping must be 'contiguous' or 'category_id'; got {label_mapping!r}")


class COCODetection(Dataset):
    """Images and boxes of one COCO-format split.

    Args:
        image_dir: the folder of the images (``root/{split}``).
        ann_file: its instances JSON.
        transform: an albumentations ``Compose`` with ``bbox_params`` (pascal_voc, label field ``labels``), ending
            in ``ToTensorV2``; None = only to tensor in [0, 1].
        label_to_category_id: label -> category id (from the datamodule, the same for every split).
        include_crowd: keep ``iscrowd`` boxes in the targets (never for training).

    At construction, boxes are clipped to their image and boxes with no area left are dropped; one warning
    counts both. Images without boxes are kept.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        ann_file: str | os.PathLike,
        transform: Optional[Callable[..., Dict[str, Any]]] = None,
        label_to_category_id: Optional[Sequence[int]] = None,
        include_crowd: bool = False,
        data: Optional[Dict[str, Any]] = None,
    ):
        self.image_dir, self.ann_file = Path(image_dir), Path(ann_file)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(
                f"COCO image folder {self.image_dir} not found (expected root/<split>/ with the images)"
            )
        data = data if data is not None else load_coco_annotations(self.ann_file)
        self.transform = transform
        if label_to_category_id is None:
            label_to_category_id = _category_mapping(data["categories"], "contiguous")[0]
        self.label_to_category_id = list(label_to_category_id)
        cat_to_label = {c: i for i, c in enumerate(self.label_to_category_id)}
        missing = sorted({c["id"] for c in data["categories"]} - set(cat_to_label))
        if missing:
            raise COCOFormatError(
                f"{self.ann_file}: category ids {missing} are not in the label mapping {self.label_to_category_id}"
            )
        self.images = sorted(data["images"], key=lambda im: im["id"])
        absent = [im["file_name"] for im in self.images if not (self.image_dir / im["file_name"]).is_file()]
        if absent:  # found now, at setup, not as a crash in the middle of an epoch
            raise FileNotFoundError(
                f"{self.ann_file}: {len(absent)} of {len(self.images)} listed images are not in "
                f"{self.image_dir}, e.g. {', '.join(absent[:5])}"
            )
        per_image: Dict[Any, List[Tuple[List[float], int]]] = {im["id"]: [] for im in self.images}
        sizes = {im["id"]: (float(im["width"]), float(im["height"])) for im in self.images}
        clipped = dropped = crowd = 0
        for a in data["annotations"]:
            if a.get("iscrowd", 0) and not include_crowd:
                crowd += 1
                continue
            w, h = sizes[a["image_id"]]
            x, y, bw, bh = (float(v) for v in a["bbox"])
            box = [min(max(x, 0.0), w), min(max(y, 0.0), h), min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)]
            if box[2] <= box[0] or box[3] <= box[1]:
                dropped += 1
                continue
            if box != [x, y, x + bw, y + bh]:
                clipped += 1
            per_image[a["image_id"]].append((box, cat_to_label[a["category_id"]]))
        self.targets = [per_image[im["id"]] for im in self.images]
        self.num_crowd_skipped, self.num_clipped, self.num_dropped = crowd, clipped, dropped
        if clipped or dropped:
            warnings.warn(
                f"{self.ann_file}: {clipped} boxes extending outside their image were clipped and {dropped} boxes "
                "with no area inside their image were dropped",
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self.images)

    def load_image(self, index: int) -> np.ndarray:
        """The image file as HWC uint8 RGB."""
        path = self.image_dir / self.images[index]["file_name"]
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as err:  # truncated, corrupt or not an image (PIL's own errors)
            raise OSError(f"cannot read image {path} (image id {self.images[index]['id']}): {err}") from err

    def __getitem__(self, index: int) -> Tuple[Tensor, Dict[str, Tensor]]:
        info, objs = self.images[index], self.targets[index]
        image = self.load_image(index)
        h0, w0 = image.shape[:2]
        boxes = np.array([b for b, _ in objs], dtype=np.float32).reshape(-1, 4)
        labels = np.array([lab for _, lab in objs], dtype=np.int64)
        if (h0, w0) != (int(info["height"]), int(info["width"])):  # the file disagrees with the JSON: trust the file
            scale = np.array([w0 / info["width"], h0 / info["height"]] * 2, dtype=np.float32)
            boxes = np.clip(boxes * scale, 0, [w0, h0, w0, h0]).astype(np.float32)
        if self.transform is not None:
            reseed_from_torch(self.transform)  # seeded, per worker, resumable (see data/transforms.py)
            out = self.transform(image=image, bboxes=boxes, labels=labels)
            img = out["image"]
            boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        else:
            img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255)
        h, w = img.shape[-2:]
        b = torch.from_numpy(boxes)
        cxcywh = torch.stack(
            [
                (b[:, 0] + b[:, 2]) / 2 / w,
                (b[:, 1] + b[:, 3]) / 2 / h,
                (b[:, 2] - b[:, 0]) / w,
                (b[:, 3] - b[:, 1]) / h,
            ],
            -1,
        )
        target = {
            "labels": torch.from_numpy(labels),
            "boxes": cxcywh.clamp(0, 1),
            "image_id": int(info["id"]),
            "orig_size": torch.tensor([h0, w0]),
            "size": torch.tensor([h, w]),
        }
        return img, target


def detection_collate(batch: Sequence[Tuple[Tensor, Dict[str, Any]]]) -> Tuple[Tensor, Tensor, List[Dict[str, Any]]]:
    """Pad images ``(3, H_i, W_i)`` bottom/right to ``(B, 3, H, W)``; ``mask (B, H, W)`` True on padding."""
    images, targets = zip(*batch)
    padded, mask = pad_images_to_batch(images)
    return padded, mask, list(targets)
