"""COCO-format object detection as a LightningDataModule, with DETR's augmentations.

Reads the standard layout ``root/{split}/*.jpg`` + ``root/annotations/instances_{split}.json`` (COCO 2017 or any
dataset in that format). Batches are ``(images (B, 3, H, W), mask (B, H, W) bool, targets)`` with ``mask`` True on
padding (see :func:`~vision_attn.data.coco.dataset.detection_collate`).

Labels: ``label_mapping="contiguous"`` numbers the categories 0..K-1 in id order (``label_to_category_id`` maps
back); ``"category_id"`` uses the category id itself as the label (K = max id + 1; DETR's convention for COCO,
needed by the official checkpoints, whose class head has 91 + 1 outputs).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import albumentations as A
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ..images import PredictFolderMixin
from ..resumable import ResumableSampler, SeededSamples
from ..transforms import AlbumentationsTransform
from .dataset import COCODetection, _category_mapping, detection_collate
from .transforms import DETR_SCALES, detr_eval_transform, detr_predict_transform, detr_train_transform
from .validate import load_coco_annotations

__all__ = ["COCODataModule", "COCOLoaderOptions", "SyntheticCOCODataModule"]


@dataclasses.dataclass(frozen=True)
class COCOLoaderOptions:
    """The loader and transform options of a :class:`COCODataModule` (its arguments of the same names)."""

    batch_size: int
    val_batch_size: Optional[int]
    num_workers: int
    scales: List[int]
    max_size: Optional[int]
    val_size: int
    random_crop: bool
    crop_scales: List[int]
    crop_size: Tuple[int, int]
    label_mapping: str


class COCODataModule(PredictFolderMixin, pl.LightningDataModule):
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
        predict_root: a folder, image file or glob of your own images for ``predict``: the evaluation resize
            (``val_size``, ``max_size``), batched ``val_batch_size`` at a time among images of one size (never
            padded, so an image's detections do not depend on the others); the label -> category mapping and the
            names still come from the annotation file.
    """

    predict_detection = True

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
        predict_root: Optional[str] = None,
    ):
        super().__init__()
        # num_classes unset (read from the annotations): not an hparam, or Lightning's hparams merge would find the
        # model's count (linked from this data) disagreeing with None
        self.save_hyperparameters(ignore=["num_classes"] if num_classes is None else None)
        # the options, kept apart from hparams (a subclass saves its own arguments there)
        self.opts = COCOLoaderOptions(
            batch_size=batch_size,
            val_batch_size=val_batch_size,
            num_workers=num_workers,
            scales=list(scales),
            max_size=max_size,
            val_size=val_size,
            random_crop=random_crop,
            crop_scales=list(crop_scales),
            crop_size=tuple(crop_size),
            label_mapping=label_mapping,
        )
        if label_mapping not in ("contiguous", "category_id"):
            raise ValueError(f"label_mapping must be 'contiguous' or 'category_id'; got {label_mapping!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.root = Path(root)
        self.train_split, self.val_split = train_split, val_split
        self.test_split = test_split or val_split
        self._num_classes = num_classes
        self.predict_root = predict_root
        self.num_workers = num_workers
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
            if (
                self.opts.label_mapping == "category_id"
                and self._num_classes is not None
                and self._num_classes > len(ids)
            ):
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

    def predict_transform(self) -> AlbumentationsTransform:
        """Your images for ``predict``: the evaluation resize and normalisation, without boxes."""
        return AlbumentationsTransform(detr_predict_transform(self.opts.val_size, self.opts.max_size))

    @property
    def predict_batch_size(self) -> int:
        return int(self.opts.val_batch_size or self.opts.batch_size)

    def dataset(self, split: str, train: bool = False) -> COCODetection:
        """The dataset of ``split`` with the training or evaluation transform (cached)."""
        key = f"{split}:{'train' if train else 'eval'}"
        if key not in self.datasets:
            self.prepare_data()
            image_dir = self.image_dir(split)
            if not image_dir.is_dir():
                raise FileNotFoundError(
                    f"COCO image folder {image_dir} not found (expected {self.root}/<split>/ with the images)"
                )
            self.datasets[key] = COCODetection(
                image_dir,
                self.ann_file(split),
                self.train_transform() if train else self.eval_transform(),
                label_to_category_id=self.label_to_category_id,
                data=self._load(split),
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
        # training: order and augmentations from a ResumableSampler, so a fit resumes at any batch (see data.resumable)
        sampler = ResumableSampler(ds, shuffle=True) if shuffle else None
        return DataLoader(
            SeededSamples(ds) if shuffle else ds,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=nw,
            collate_fn=detection_collate,
            drop_last=shuffle,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator(),
        )

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
        batch_size, num_workers, scales, max_size, val_size, random_crop, crop_scales, crop_size, predict_root: as
            for :class:`COCODataModule` (defaults sized for the ~100-128 px shapes).
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
        predict_root: Optional[str] = None,
    ):
        from ..synthetic_coco import _check_args, coco_shapes_folder_name

        _check_args(num_train, num_val, img_size, num_classes, max_objects, seed)
        self.gen_args = dict(
            num_train=num_train,
            num_val=num_val,
            img_size=img_size,
            num_classes=num_classes,
            max_objects=max_objects,
            seed=seed,
        )
        folder = Path(root) / coco_shapes_folder_name(**self.gen_args)
        super().__init__(
            root=str(folder),
            train_split="train",
            val_split="val",
            test_split=None,
            batch_size=batch_size,
            val_batch_size=val_batch_size,
            num_workers=num_workers,
            scales=scales,
            max_size=max_size,
            val_size=val_size,
            random_crop=random_crop,
            crop_scales=crop_scales,
            crop_size=crop_size,
            label_mapping="contiguous",
            num_classes=num_classes,
            predict_root=predict_root,
        )
        self.save_hyperparameters()
        self.data_root = Path(root)

    def prepare_data(self) -> None:
        # deterministic and atomic, so any process may generate (e.g. setup() without prepare_data())
        from ..synthetic_coco import generate_coco_shapes

        generate_coco_shapes(self.data_root, **self.gen_args)
