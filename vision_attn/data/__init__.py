"""LightningDataModules (CIFAR, COCO, synthetic shapes and COCO-format shapes, image folders); albumentations transforms."""

from . import _offline  # noqa: F401  (first: sets NO_ALBUMENTATIONS_UPDATE before any module here imports albumentations)
from .cifar import CIFARDataModule, stratified_subset
from .coco import COCODataModule, COCOFormatError, SyntheticCOCODataModule
from .folder import ImageFolderDataModule
from .images import find_images, image_loader, load_rgb
from .synthetic import ShapesDataset, SyntheticShapesDataModule, generate_shapes
from .transforms import AlbumentationsTransform, eval_transform, train_transform

__all__ = [
    "CIFARDataModule",
    "COCODataModule",
    "SyntheticCOCODataModule",
    "COCOFormatError",
    "SyntheticShapesDataModule",
    "ImageFolderDataModule",
    "find_images",
    "image_loader",
    "load_rgb",
    "ShapesDataset",
    "generate_shapes",
    "stratified_subset",
    "AlbumentationsTransform",
    "train_transform",
    "eval_transform",
]
