"""What the floors above rely on from a datamodule, declared as ``typing.Protocol``\\ s (checked with ``isinstance``)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

__all__ = ["CategoryLabels", "DetectionAnnotations"]


@runtime_checkable
class CategoryLabels(Protocol):
    """Detection data whose labels map to annotation-file category ids: what ``predictions.json`` needs."""

    @property
    def label_to_category_id(self) -> Sequence[int]:
        """Label -> the annotation file's category id."""
        ...

    @property
    def category_ids(self) -> Sequence[int]:
        """The ids of the data's categories, sorted."""
        ...


@runtime_checkable
class DetectionAnnotations(CategoryLabels, Protocol):
    """A detection datamodule with COCO-format annotation files (:class:`~vision_attn.data.COCODataModule`, the
    synthetic shapes): what COCO evaluation needs (the category labels and each split's annotation file)."""

    def ann_file(self, split: str) -> Path:
        """The annotation JSON of a split name (``train2017``, ...)."""
        ...

    def split_name(self, split: str) -> str:
        """``"train"``/``"val"``/``"test"`` (or a split name) -> the split name."""
        ...
