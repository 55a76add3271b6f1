"""COCO-format object detection as a LightningDataModule, with DETR's augmentations on albumentations.

Reads the standard layout ``root/{split}/*.jpg`` + ``root/annotations/instances_{split}.json`` (COCO 2017 or any
dataset in that format). Each item is ``(image (3, H, W) float, target dict)``; the collate pads a batch to its
largest image (bottom/right) and returns ``(images (B, 3, H, W), mask (B, H, W) bool, targets)`` with
``mask`` True on padding. A target holds:

- ``labels (N,)`` int64 in ``[0, num_classes)``, ``boxes (N, 4)`` float normalised ``(cx, cy, w, h)`` of the
  transformed, unpadded image; crowd boxes are left out;
- ``image_id`` (the original COCO id), ``orig_size (2,) = (h, w)`` of the file, ``size (2,)`` after transforms.

Labels: ``label_mapping="contiguous"`` numbers the categories 0..K-1 in id order (``label_to_category_id`` maps
back); ``"category_id"`` uses the category id itself as the label (K = max id + 1; DETR's convention for COCO,
needed by the official checkpoints, whose class head has 91 + 1 outputs).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from albumentations.augmentations.crops.transforms import BaseCrop  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from .transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

__all__ = [
    "COCOFormatError",
    "COCODetection",
    "COCODataModule",
    "SyntheticCOCODataModule",
    "load_coco_annotations",
    "detection_collate",
    "detr_train_transform",
    "detr_eval_transform",
    "ResizeShortSide",
    "RandomSizeCrop",
]

DETR_SCALES = tuple(range(480, 801, 32))


class COCOFormatError(ValueError):
    """An annotation file that is not valid COCO instances JSON; the message names the file and the record."""


# ---- annotation file ---------------------------------------------------------------------------------------------
def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def load_coco_annotations(path: str | os.PathLike) -> Dict[str, Any]:
    """Read and check a COCO instances file; return ``{"images", "annotations", "categories"}``.

    Raises:
        FileNotFoundError: the file does not exist.
        COCOFormatError: not JSON, a missing top-level key, or the first record that is malformed (named by its
            list and index): images need ``id, file_name, width, height``; categories ``id, name``; annotations
            ``image_id`` of a listed image, ``category_id`` of a listed category and ``bbox`` = 4 finite numbers
            ``[x, y, w, h]`` with ``w, h >= 0``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {path} not found")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise COCOFormatError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise COCOFormatError(f"{path}: expected a JSON object with 'images', 'annotations', 'categories'; got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise COCOFormatError(f"{path}: missing or non-list top-level key {key!r} (COCO instances format expected)")

    def bad(kind: str, i: int, rec: Any, why: str) -> COCOFormatError:
        text = json.dumps(rec)[:200] if not isinstance(rec, str) else rec
        return COCOFormatError(f"{path}: {kind}[{i}] {why}: {text}")

    image_ids = set()
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not all(k in im for k in ("id", "file_name", "width", "height")):
            raise bad("images", i, im, "needs keys id, file_name, width, height")
        if not (_is_number(im["width"]) and _is_number(im["height"]) and im["width"] > 0 and im["height"] > 0):
            raise bad("images", i, im, "width and height must be positive numbers")
        image_ids.add(im["id"])
    cat_ids = set()
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or isinstance(c.get("id"), bool) or c["id"] < 0 or "name" not in c:
            raise bad("categories", i, c, "needs an int id >= 0 and a name")
        cat_ids.add(c["id"])
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or not all(k in a for k in ("image_id", "category_id", "bbox")):
            raise bad("annotations", i, a, "needs keys image_id, category_id, bbox")
        box = a["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)) or box[2] < 0 or box[3] < 0:
            raise bad("annotations", i, a, "bbox must be 4 finite numbers [x, y, w, h] with w, h >= 0")
        if a["image_id"] not in image_ids:
            raise bad("annotations", i, a, f"image_id {a['image_id']!r} is not in 'images'")
        if a["category_id"] not in cat_ids:
            raise bad("annotations", i, a, f"category_id {a['category_id']!r} is not in 'categories'")
    return data


# ---- transforms --------------------------------------------------------------------------------------------------
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

    def __init__(self, sizes: Sequence[int], max_size: Optional[int] = None, interpolation: int = cv2.INTER_LINEAR, p: float = 1.0):
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
        crop_branch = A.Sequential([ResizeShortSide(crop_scales), RandomSizeCrop(*crop_size), ResizeShortSide(scales, max_size)])
        resize = A.OneOf([resize, crop_branch], p=1.0)
    ops = [A.HorizontalFlip(p=0.5), resize, A.Normalize(mean=tuple(mean), std=tuple(std)), ToTensorV2()]
    return A.Compose(ops, bbox_params=_bbox_params())


def detr_eval_transform(size: int = 800, max_size: Optional[int] = 1333, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> A.Compose:
    """Evaluation: short side to ``size`` (long side at most ``max_size``), normalise."""
    ops = [ResizeShortSide([size], max_size), A.Normalize(mean=tuple(mean), std=tuple(std)), ToTensorV2()]
    return A.Compose(ops, bbox_params=_bbox_params())


# ---- dataset -----------------------------------------------------------------------------------------------------
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
        transform: Optional[A.Compose] = None,
        label_to_category_id: Optional[Sequence[int]] = None,
        include_crowd: bool = False,
        data: Optional[Dict[str, Any]] = None,
    ):
        self.image_dir, self.ann_file = Path(image_dir), Path(ann_file)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder {self.image_dir} not found (expected root/<split>/ with the images)")
        data = data if data is not None else load_coco_annotations(self.ann_file)
        self.transform = transform
        if label_to_category_id is None:
            label_to_category_id = _category_mapping(data["categories"], "contiguous")[0]
        self.label_to_category_id = list(label_to_category_id)
        cat_to_label = {c: i for i, c in enumerate(self.label_to_category_id)}
        missing = sorted({c["id"] for c in data["categories"]} - set(cat_to_label))
        if missing:
            raise COCOFormatError(f"{self.ann_file}: category ids {missing} are not in the label mapping {self.label_to_category_id}")
        self.images = sorted(data["images"], key=lambda im: im["id"])
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
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

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
            out = self.transform(image=image, bboxes=boxes, labels=labels)
            img = out["image"]
            boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        else:
            img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255)
        h, w = img.shape[-2:]
        b = torch.from_numpy(boxes)
        cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h, (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], -1)
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
    h = max(im.shape[1] for im in images)
    w = max(im.shape[2] for im in images)
    out = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    mask = torch.ones((len(images), h, w), dtype=torch.bool)
    for i, im in enumerate(images):
        out[i, :, : im.shape[1], : im.shape[2]] = im
        mask[i, : im.shape[1], : im.shape[2]] = False
    return out, mask, list(targets)


# ---- datamodule --------------------------------------------------------------------------------------------------
class COCODataModule(pl.LightningDataModule):
    """A COCO-format detection dataset with DETR's augmentations.

    Args:
        root: folder holding ``{split}/`` image folders and ``annotations/instances_{split}.json``.
        train_split, val_split: split names; test_split: defaults to ``val_split``.
        batch_size, num_workers: DataLoader options (``val_batch_size`` defaults to ``batch_size``).
        scales: training short-side sizes (DETR: 480..800 step 32); max_size: long-side cap (1333);
        val_size: evaluation short side (800).
        random_crop: DETR's resize -> random crop -> resize branch, half the time; crop_scales: its first resize;
            crop_size: ``(min, max)`` crop side.
        label_mapping: ``"contiguous"`` (labels 0..K-1 in category-id order) or ``"category_id"`` (label = id).
        num_classes: skip reading the categories at construction (must match the mapping).
    """

    def __init__(
        self,
        root: str = "data/coco",
        train_split: str = "train2017",
        val_split: str = "val2017",
        test_split: Optional[str] = None,
        batch_size: int = 2,
        val_batch_size: Optional[int] = None,
        num_workers: int = 2,
        scales: Sequence[int] = DETR_SCALES,
        max_size: Optional[int] = 1333,
        val_size: int = 800,
        random_crop: bool = True,
        crop_scales: Sequence[int] = (400, 500, 600),
        crop_size: Tuple[int, int] = (384, 600),
        label_mapping: str = "contiguous",
        num_classes: Optional[int] = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        # the options, kept apart from hparams (a subclass saves its own arguments there)
        self.opts = argparse.Namespace(
            batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers, scales=list(scales),
            max_size=max_size, val_size=val_size, random_crop=random_crop, crop_scales=list(crop_scales),
            crop_size=tuple(crop_size), label_mapping=label_mapping,
        )
        if label_mapping not in ("contiguous", "category_id"):
            raise ValueError(f"label_mapping must be 'contiguous' or 'category_id'; got {label_mapping!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.root = Path(root)
        self.train_split, self.val_split = train_split, val_split
        self.test_split = test_split or val_split
        self._num_classes = num_classes
        self._annotations: Dict[Path, Dict[str, Any]] = {}
        self._mapping: Optional[Tuple[List[int], List[str]]] = None
        self.datasets: Dict[str, COCODetection] = {}

    # --- files and labels -----------------------------------------------------------------------
    def ann_file(self, split: str) -> Path:
        return self.root / "annotations" / f"instances_{split}.json"

    def image_dir(self, split: str) -> Path:
        return self.root / split

    def _load(self, split: str) -> Dict[str, Any]:
        path = self.ann_file(split)
        if path not in self._annotations:
            self._annotations[path] = load_coco_annotations(path)
        return self._annotations[path]

    def _label_source(self) -> Dict[str, Any]:
        # the categories come from the training file when it exists, else from the evaluation file
        # (evaluating COCO val2017 must not need train2017)
        for split in (self.train_split, self.val_split, self.test_split):
            if self.ann_file(split).is_file():
                return self._load(split)
        raise FileNotFoundError(
            f"no annotation file under {self.root / 'annotations'} (looked for instances_{{{self.train_split}, {self.val_split}}}.json)"
        )

    def _labels(self) -> Tuple[List[int], List[str]]:
        if self._mapping is None:
            self.prepare_data()
            ids, names = _category_mapping(self._label_source()["categories"], self.opts.label_mapping)
            if self.opts.label_mapping == "category_id" and self._num_classes is not None and self._num_classes > len(ids):
                # label = category id: a larger head (COCO's 91) just has labels no category uses
                ids, names = list(range(self._num_classes)), names + [""] * (self._num_classes - len(ids))
            self._mapping = (ids, names)
            if self._num_classes is not None and self._num_classes != len(self._mapping[0]):
                raise ValueError(
                    f"num_classes={self._num_classes} but {self.root} has {len(self._mapping[0])} labels "
                    f"with label_mapping={self.opts.label_mapping!r}"
                )
        return self._mapping

    @property
    def num_classes(self) -> int:
        """Object classes (the model adds "no object")."""
        return self._num_classes if self._num_classes is not None else len(self._labels()[0])

    @property
    def label_to_category_id(self) -> List[int]:
        """Contiguous label -> original category id."""
        return self._labels()[0]

    @property
    def category_ids(self) -> List[int]:
        """The ids of the dataset's categories, sorted."""
        return sorted(c["id"] for c in self._label_source()["categories"])

    @property
    def category_id_to_label(self) -> Dict[int, int]:
        return {c: i for i, c in enumerate(self._labels()[0])}

    @property
    def classes(self) -> List[str]:
        """Category name per label (``""`` for labels that are no category under ``label_mapping="category_id"``)."""
        return self._labels()[1]

    # --- Lightning ------------------------------------------------------------------------------
    def train_transform(self) -> A.Compose:
        hp = self.opts
        return detr_train_transform(hp.scales, hp.max_size, hp.random_crop, hp.crop_scales, tuple(hp.crop_size))

    def eval_transform(self) -> A.Compose:
        return detr_eval_transform(self.opts.val_size, self.opts.max_size)

    def dataset(self, split: str, train: bool = False) -> COCODetection:
        """The dataset of ``split`` with the training or evaluation transform (cached)."""
        key = f"{split}:{'train' if train else 'eval'}"
        if key not in self.datasets:
            self.prepare_data()
            image_dir = self.image_dir(split)
            if not image_dir.is_dir():
                raise FileNotFoundError(f"COCO image folder {image_dir} not found (expected {self.root}/<split>/ with the images)")
            self.datasets[key] = COCODetection(
                image_dir, self.ann_file(split), self.train_transform() if train else self.eval_transform(),
                label_to_category_id=self.label_to_category_id, data=self._load(split),
            )
        return self.datasets[key]

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit"):
            self.dataset(self.train_split, train=True)
        if stage in (None, "fit", "validate"):
            self.dataset(self.val_split)
        if stage in (None, "test"):
            self.dataset(self.test_split)

    def _loader(self, ds: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        nw = self.opts.num_workers
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=nw, collate_fn=detection_collate,
                          drop_last=shuffle, persistent_workers=nw > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.train_split, train=True), True, self.opts.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.val_split), False, self.opts.val_batch_size or self.opts.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.test_split), False, self.opts.val_batch_size or self.opts.batch_size)

    def split_dataloader(self, split: str) -> DataLoader:
        """Evaluation loader of ``"train"``/``"val"``/``"test"`` (the configured split names)."""
        name = {"train": self.train_split, "val": self.val_split, "test": self.test_split}.get(split, split)
        return self._loader(self.dataset(name), False, self.opts.val_batch_size or self.opts.batch_size)

    def split_name(self, split: str) -> str:
        return {"train": self.train_split, "val": self.val_split, "test": self.test_split}.get(split, split)


class SyntheticCOCODataModule(COCODataModule):
    """The built-in shapes detection task (:func:`~vision_attn.data.synthetic_coco.generate_coco_shapes`),
    generated on first use and then read by :class:`COCODataModule`'s own code (splits ``train`` and ``val``).

    Args:
        root: where the generated folder goes.
        num_train, num_val, img_size, num_classes, max_objects, seed: generation arguments.
        batch_size, num_workers, scales, max_size, val_size, random_crop, crop_scales, crop_size: as for
            :class:`COCODataModule` (defaults sized for the ~100-128 px shapes).
    """

    def __init__(
        self,
        root: str = "data",
        num_train: int = 2000,
        num_val: int = 200,
        img_size: int = 128,
        num_classes: int = 4,
        max_objects: int = 4,
        seed: int = 0,
        batch_size: int = 16,
        val_batch_size: Optional[int] = None,
        num_workers: int = 0,
        scales: Sequence[int] = (96, 104, 112, 120, 128),
        max_size: Optional[int] = 170,
        val_size: int = 112,
        random_crop: bool = False,
        crop_scales: Sequence[int] = (96, 112, 128),
        crop_size: Tuple[int, int] = (72, 112),
    ):
        from .synthetic_coco import _check_args, coco_shapes_folder_name

        _check_args(num_train, num_val, img_size, num_classes, max_objects, seed)
        self.gen_args = dict(num_train=num_train, num_val=num_val, img_size=img_size, num_classes=num_classes, max_objects=max_objects, seed=seed)
        folder = Path(root) / coco_shapes_folder_name(**self.gen_args)
        super().__init__(
            root=str(folder), train_split="train", val_split="val", test_split=None, batch_size=batch_size,
            val_batch_size=val_batch_size, num_workers=num_workers, scales=scales, max_size=max_size,
            val_size=val_size, random_crop=random_crop, crop_scales=crop_scales, crop_size=crop_size,
            label_mapping="contiguous", num_classes=num_classes,
        )
        self.save_hyperparameters()
        self.data_root = Path(root)

    def prepare_data(self) -> None:
        # deterministic and atomic, so any process may generate (e.g. setup() without prepare_data())
        from .synthetic_coco import generate_coco_shapes

        generate_coco_shapes(self.data_root, **self.gen_args)
