"""What the floors above rely on from a datamodule, declared as ``typing.Protocol``\\ s (checked with ``isinstance``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, Union, runtime_checkable

from PIL import Image
from torch import Tensor

if TYPE_CHECKING:
    from .cifar import DatasetSpec

__all__ = ["CIFARFormatData", "CategoryLabels", "DetectionAnnotations", "LabelledImages", "PredictsImageFiles"]


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


@runtime_checkable
class LabelledImages(Protocol):
    """Image classification data stored under ``root`` (:class:`~vision_attn.data.CIFARDataModule`, the synthetic
    shapes, :class:`~vision_attn.data.ImageFolderDataModule`)."""

    root: Union[str, Path]

    @property
    def classes(self) -> Sequence[str]:
        """Class names, index = label (may need the data's files)."""
        ...

    @property
    def n_train(self) -> int:
        """Training images after ``train_fraction`` (after ``setup``)."""
        ...


@runtime_checkable
class CIFARFormatData(LabelledImages, Protocol):
    """CIFAR-format data (:class:`~vision_attn.data.CIFARDataModule`, the synthetic shapes): what a GAN's training
    and evaluation read beside the images: the normalisation to undo (``spec.mean``, ``spec.std``), whether training
    images get padded random crops (``augment``) and the folder of the files (``dataset_dir``)."""

    spec: DatasetSpec
    augment: bool

    @property
    def dataset_dir(self) -> Path:
        """The folder the dataset files live in."""
        ...


@runtime_checkable
class PredictsImageFiles(Protocol):
    """A datamodule that predicts on the user's own image files (every datamodule here: ``PredictFolderMixin``):
    the transform of one PIL image and the batch size to use."""

    @property
    def predict_batch_size(self) -> int:
        """Images per prediction batch."""
        ...

    def predict_transform(self) -> Callable[[Image.Image], Tensor]:
        """PIL RGB image -> ``(3, H, W)``, as the model's evaluation images."""
        ...
