"""Albumentations pipelines for image classification, and the adapter that lets torchvision datasets use them.

torchvision datasets hand out PIL images; albumentations works on HWC ``uint8`` numpy arrays. The adapter
bridges the two and always returns a float tensor ``(C, H, W)``.

Randomness: an albumentations ``Compose`` keeps its own generators (seeded from the OS unless given a seed), which
``seed_everything`` does not reach, every DataLoader worker inherits as identical copies, and no checkpoint holds.
So before each image, :func:`reseed_from_torch` reseeds the pipeline from one draw of torch's generator: in the main
process that is the global one (seeded by ``seed_everything``, saved in checkpoints by ``ResumeState``); in a loader
worker it is the worker's, which PyTorch (and Lightning's ``seed_everything(workers=True)``) seed per worker, rank and
epoch. Same seed, same augmentations, whatever the number of workers' history; a resumed run replays them.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Optional, Sequence

import albumentations as A  # vision_attn.data's __init__ has set NO_ALBUMENTATIONS_UPDATE (data/_offline.py)
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AlbumentationsTransform",
    "reseed_from_torch",
    "train_transform",
    "eval_transform",
    "imagenet_train_transform",
    "imagenet_eval_transform",
    "INTERPOLATIONS",
]

# Per-channel statistics of the training splits, in [0, 1] units (RGB).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def reseed_from_torch(pipeline: Any) -> None:
    """Reseed an albumentations pipeline (and every transform in it) from one draw of torch's current generator.

    One NumPy and one Python generator are shared by all its transforms (``Compose(seed=s)`` would give each transform
    its own generator with the same seed, so e.g. the crop offset and the flip decision would be correlated).
    """
    if isinstance(pipeline, (A.BaseCompose, A.BasicTransform)):
        seed = int(torch.randint(0, 2**62, ()).item())
        pipeline.set_random_state(np.random.Generator(np.random.PCG64(seed)), random.Random(seed))


class AlbumentationsTransform:
    """Run an albumentations pipeline on a PIL image or an HWC ``uint8`` array; return a float tensor ``(C, H, W)``.

    Args:
        transform: an albumentations ``Compose`` (or any callable taking ``image=`` and returning ``{"image": ...}``).

    A pipeline without ``ToTensorV2`` is fine too: a numpy result is moved to ``(C, H, W)``; a ``uint8`` result
    (no ``Normalize``) is scaled to [0, 1].
    """

    def __init__(self, transform: Callable[..., dict[str, Any]]):
        self.transform = transform

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
        elif not isinstance(image, np.ndarray):
            raise TypeError(
                f"AlbumentationsTransform expects a PIL image or an HWC numpy array; got {type(image).__name__}"
            )
        if image.ndim == 2:  # grayscale array: albumentations wants an explicit channel axis
            image = image[:, :, None]
        reseed_from_torch(self.transform)
        out = self.transform(image=image)["image"]
        if isinstance(out, np.ndarray):
            out = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))
        if not out.is_floating_point():
            out = out.float().div_(255.0)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


def _resize(img_size: Optional[int]) -> list[A.BasicTransform]:
    return [] if img_size is None else [A.Resize(img_size, img_size, interpolation=cv2.INTER_LINEAR)]


def train_transform(
    mean: Sequence[float],
    std: Sequence[float],
    img_size: Optional[int] = None,
    crop_padding: int = 4,
    *,
    input_size: int = 32,
) -> AlbumentationsTransform:
    """The standard CIFAR training augmentation: zero-pad, random crop back, horizontal flip, normalise.

    Args:
        mean, std: per-channel statistics in [0, 1] units.
        img_size: if given, resize to ``img_size x img_size`` after cropping (e.g. 224 to fine-tune ImageNet models).
        crop_padding: pixels of zero padding on each side before the random crop (0 disables padding and cropping).
        input_size: side of the incoming square images (32 for CIFAR); the crop restores this size.

    Returns:
        callable: image -> float tensor ``(3, S, S)`` with ``S = img_size or input_size``.
    """
    ops: list[A.BasicTransform] = []
    if crop_padding > 0:
        ops += [
            A.Pad(padding=crop_padding, fill=0, border_mode=cv2.BORDER_CONSTANT),
            A.RandomCrop(height=input_size, width=input_size),
        ]
    ops += [A.HorizontalFlip(p=0.5), *_resize(img_size), A.Normalize(mean=tuple(mean), std=tuple(std)), ToTensorV2()]
    return AlbumentationsTransform(A.Compose(ops))


def eval_transform(
    mean: Sequence[float], std: Sequence[float], img_size: Optional[int] = None
) -> AlbumentationsTransform:
    """Deterministic evaluation transform: optional resize to ``img_size``, normalise, to tensor ``(3, H, W)``."""
    ops = [*_resize(img_size), A.Normalize(mean=tuple(mean), std=tuple(std)), ToTensorV2()]
    return AlbumentationsTransform(A.Compose(ops))


# timm's interpolation names -> OpenCV's (albumentations resizes with OpenCV)
INTERPOLATIONS = {
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


def _interpolation(name: str) -> int:
    if name not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}; got {name!r}")
    return INTERPOLATIONS[name]


def imagenet_train_transform(
    img_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bilinear",
) -> AlbumentationsTransform:
    """ImageNet-style training: random resized crop to ``img_size`` (scale 0.08-1), horizontal flip, normalise."""
    ops = [
        A.RandomResizedCrop(size=(img_size, img_size), scale=(0.08, 1.0), interpolation=_interpolation(interpolation)),
        A.HorizontalFlip(p=0.5),
        A.Normalize(mean=tuple(mean), std=tuple(std)),
        ToTensorV2(),
    ]
    return AlbumentationsTransform(A.Compose(ops))


def imagenet_eval_transform(
    img_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bilinear",
    crop_pct: float = 224 / 256,
) -> AlbumentationsTransform:
    """ImageNet-style evaluation: short side to ``img_size / crop_pct`` (256 for 224), center crop ``img_size``,
    normalise."""
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1]; got {crop_pct}")
    ops = [
        A.SmallestMaxSize(max_size=int(round(img_size / crop_pct)), interpolation=_interpolation(interpolation)),
        A.CenterCrop(height=img_size, width=img_size),
        A.Normalize(mean=tuple(mean), std=tuple(std)),
        ToTensorV2(),
    ]
    return AlbumentationsTransform(A.Compose(ops))
