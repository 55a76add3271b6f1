"""LightningDataModules (CIFAR, synthetic shapes, image folders) and albumentations transforms."""
from .cifar import CIFARDataModule, stratified_subset
from .coco import COCODataModule, SyntheticCOCODataModule  # noqa: F401
from .folder import ImageFolderDataModule
from .synthetic import ShapesDataset, SyntheticShapesDataModule, generate_shapes
from .transforms import AlbumentationsTransform, eval_transform, train_transform

__all__ = [
    "CIFARDataModule",
    "SyntheticShapesDataModule",
    "ImageFolderDataModule",
    "ShapesDataset",
    "generate_shapes",
    "stratified_subset",
    "AlbumentationsTransform",
    "train_transform",
    "eval_transform",
]
