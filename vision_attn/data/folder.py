"""Any ``root/{train,val}/<class>/<image>`` tree (ImageNet's layout) as a LightningDataModule."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import default_collate
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes

from .cifar import SplitLoadersMixin, TransformedSubset, stratified_subset
from .images import PredictFolderMixin
from .transforms import IMAGENET_MEAN, IMAGENET_STD, imagenet_eval_transform, imagenet_train_transform

__all__ = ["ImageFolderDataModule", "CheckedImageFolder", "BadImageError"]

log = logging.getLogger(__name__)


class BadImageError(OSError):
    """An image file is truncated or cannot be decoded."""


class CheckedImageFolder(ImageFolder):
    """torchvision's ``ImageFolder`` whose unreadable images are named, or skipped and counted.

    Args:
        root: a split folder with one sub-folder per class.
        skip_bad: False: a truncated or undecodable file raises :class:`BadImageError` naming it. True: its item is
            ``None`` (dropped from the batch by :func:`collate_skipping_none`), it is logged, and :attr:`bad_files`
            lists it (counted across loader workers: the flags live in shared memory).
    """

    def __init__(self, root: str, skip_bad: bool = False) -> None:
        super().__init__(root)
        self.skip_bad = skip_bad
        self._bad = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()  # one flag per file: no races

    @property
    def bad_files(self) -> list[str]:
        """Files found unreadable so far (with ``skip_bad``)."""
        return [self.samples[i][0] for i in self._bad.nonzero().flatten().tolist()]

    def __getitem__(self, index: int) -> Optional[tuple[Any, int]]:
        path, target = self.samples[index]
        try:
            image = self.loader(path)  # decodes the whole file (PIL is lazy until convert)
        except (OSError, ValueError, SyntaxError) as err:  # truncated: OSError; not an image: UnidentifiedImageError
            if not self.skip_bad:
                raise BadImageError(
                    f"{path}: unreadable image ({err}); skip_bad_images=True skips such files"
                ) from None
            if not self._bad[index]:
                log.warning("skipping unreadable image %s (%s)", path, err)
            self._bad[index] = True
            return None
        return image, target


class _SkippableSubset(TransformedSubset):
    """A :class:`TransformedSubset` passing ``None`` (a skipped image) through untransformed."""

    def __getitem__(self, i: int) -> Optional[tuple[Any, int]]:
        item = self.dataset[self.indices[i]]
        if item is None:
            return None
        image, target = item
        return (self.transform(image) if self.transform is not None else image), target


def collate_skipping_none(batch: Sequence[Optional[tuple[Any, int]]]) -> Any:
    """``default_collate`` of the items that are not ``None`` (skipped images); a batch of nothing but those raises."""
    kept = [item for item in batch if item is not None]
    if not kept:
        raise BadImageError(f"all {len(batch)} images of a batch were unreadable and skipped")
    return default_collate(kept)


class ImageFolderDataModule(SplitLoadersMixin, PredictFolderMixin, pl.LightningDataModule):
    """torchvision ``ImageFolder`` splits with ImageNet-style albumentations transforms.

    Args:
        root: folder holding the split folders.
        train_dir, val_dir: split folders under ``root``, each with one sub-folder per class.
        test_dir: split used by ``test_dataloader``; defaults to ``val_dir``.
        img_size: side of the square crops fed to the model. Training: random resized crop + flip; evaluation:
            short side to ``img_size / crop_pct``, center crop.
        mean, std: normalisation (RGB, [0, 1] units); interpolation: ``bilinear``, ``bicubic``, ...; crop_pct: the
            evaluation crop's share of the resized short side. Each of ``img_size``, ``mean``, ``std``,
            ``interpolation``, ``crop_pct`` left unset comes from the model's ``pretrained_cfg`` (the CLI calls
            :meth:`use_model_data_config`; AugReg ViTs: 0.5/0.5, bicubic, 0.9), else ImageNet's defaults (224,
            ImageNet mean/std, bilinear, 0.875).
        batch_size, num_workers: as for the DataLoader.
        train_fraction, fraction_seed: train on a stratified, seeded fraction of ``train_dir`` (same semantics as
            :func:`vision_attn.data.stratified_subset`).
        predict_root: a folder, image file or glob of your own images for ``predict`` (evaluation transform; class
            names from ``train_dir`` when it is there).
        skip_bad_images: skip (and count, :attr:`bad_images`) truncated or undecodable files instead of stopping with
            an error naming the file; a batch then holds fewer images.
    """

    def __init__(
        self,
        root: str,
        train_dir: str = "train",
        val_dir: str = "val",
        test_dir: Optional[str] = None,
        img_size: Optional[int] = None,
        batch_size: int = 64,
        num_workers: int = 2,
        train_fraction: float = 1.0,
        fraction_seed: int = 0,
        predict_root: Optional[str] = None,
        skip_bad_images: bool = False,
        mean: Optional[Tuple[float, float, float]] = None,
        std: Optional[Tuple[float, float, float]] = None,
        interpolation: Optional[str] = None,
        crop_pct: Optional[float] = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if not 0.0 < float(train_fraction) <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1]; got {train_fraction}")
        self.root = Path(root)
        self.train_dir, self.val_dir, self.test_dir = train_dir, val_dir, test_dir or val_dir
        self._preprocessing = dict(
            img_size=img_size, mean=mean, std=std, interpolation=interpolation, crop_pct=crop_pct
        )
        self._explicit = {k for k, v in self._preprocessing.items() if v is not None}
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_fraction = float(train_fraction)
        self.fraction_seed = fraction_seed
        self.predict_root = predict_root
        self.skip_bad_images = skip_bad_images
        self.collate_fn = collate_skipping_none if skip_bad_images else None
        self.train_set: Optional[TransformedSubset] = None
        self.val_set: Optional[TransformedSubset] = None
        self.test_set: Optional[TransformedSubset] = None
        self._classes: Optional[list[str]] = None

    def _split_path(self, split_dir: str) -> Path:
        path = self.root / split_dir
        if not path.is_dir():
            raise FileNotFoundError(f"image folder {path} (absolute: {path.resolve()}) does not exist")
        return path

    @property
    def classes(self) -> list[str]:
        """Class names (sub-folders of the train split), index = label."""
        if self._classes is None:
            self._classes = find_classes(str(self._split_path(self.train_dir)))[0]
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def n_train(self) -> int:
        """Number of training images after ``train_fraction`` (after ``setup``)."""
        if self.train_set is None:
            raise RuntimeError("ImageFolderDataModule.n_train is known after setup()")
        return len(self.train_set)

    def prepare_data(self) -> None:
        if self.skip_prepare_for_predict():
            return
        for split in {self.train_dir, self.val_dir, self.test_dir}:
            self._split_path(split)

    @property
    def bad_images(self) -> list[str]:
        """Unreadable files skipped so far (``skip_bad_images=True``), over every split."""
        sets = {id(s.dataset): s.dataset for s in (self.train_set, self.val_set, self.test_set) if s is not None}
        return sorted(f for d in sets.values() for f in d.bad_files)

    def _load(self, split_dir: str) -> CheckedImageFolder:
        path = self._split_path(split_dir)
        data = CheckedImageFolder(str(path), skip_bad=self.skip_bad_images)
        if data.classes != self.classes:
            train_path = self._split_path(self.train_dir)
            only_train = sorted(set(self.classes) - set(data.classes))
            only_here = sorted(set(data.classes) - set(self.classes))
            raise ValueError(
                f"class folders differ between {train_path} and {path}: only in {self.train_dir}: {only_train}, "
                f"only in {split_dir}: {only_here}"
            )
        return data

    @property
    def img_size(self) -> int:
        return int(self._preprocessing["img_size"] or 224)

    @property
    def data_config(self) -> Dict[str, Any]:
        """The preprocessing in use: ``img_size``, ``mean``, ``std``, ``interpolation``, ``crop_pct`` (ImageNet's
        defaults for what neither the config nor the model's ``pretrained_cfg`` set)."""
        p = self._preprocessing
        return dict(
            img_size=self.img_size,
            mean=tuple(p["mean"] or IMAGENET_MEAN),
            std=tuple(p["std"] or IMAGENET_STD),
            interpolation=p["interpolation"] or "bilinear",
            crop_pct=float(p["crop_pct"] or 224 / 256),
        )

    def use_model_data_config(self, cfg: Mapping[str, Any], model_name: str = "the model") -> Dict[str, Any]:
        """Take the options the config left unset from ``cfg`` (a resolved ``pretrained_cfg``: ``input_size``,
        ``mean``, ``std``, ``interpolation``, ``crop_pct``), before ``setup``; logs what it took, once. Returns that."""
        found = dict(
            img_size=(cfg.get("input_size") or (None,))[-1],
            mean=cfg.get("mean"),
            std=cfg.get("std"),
            interpolation=cfg.get("interpolation") or None,
            crop_pct=cfg.get("crop_pct"),
        )
        taken = {k: v for k, v in found.items() if k not in self._explicit and v is not None}
        taken = {k: tuple(float(x) for x in v) if k in ("mean", "std") else v for k, v in taken.items()}
        if taken and taken != {k: self._preprocessing[k] for k in taken}:
            self._preprocessing.update(taken)
            self.train_set = self.val_set = self.test_set = None  # rebuilt with the new transforms
            said = ", ".join(f"{k}={v}" for k, v in taken.items())
            rank_zero_info(
                f"image folder preprocessing from {model_name}'s pretrained_cfg: {said} "
                "(set --data.init_args.<name> to override)"
            )
        return taken

    def _eval_transform(self):
        c = self.data_config
        return imagenet_eval_transform(c["img_size"], c["mean"], c["std"], c["interpolation"], c["crop_pct"])

    def _train_transform(self):
        c = self.data_config
        return imagenet_train_transform(c["img_size"], c["mean"], c["std"], c["interpolation"])

    def predict_transform(self):
        """Your images for ``predict``: the evaluation transform (short side, center crop, normalisation)."""
        return self._eval_transform()

    def setup(self, stage: Optional[str] = None) -> None:
        if stage == "predict" and self.predict_root:
            return  # predicting reads predict_root only
        if self.train_set is not None:
            return
        train_data = self._load(self.train_dir)
        val_data = self._load(self.val_dir)
        test_data = val_data if self.test_dir == self.val_dir else self._load(self.test_dir)
        eval_tf = self._eval_transform()
        keep = stratified_subset(np.asarray(train_data.targets), self.train_fraction, self.fraction_seed)
        self.train_set = _SkippableSubset(train_data, keep, self._train_transform())
        self.val_set = _SkippableSubset(val_data, range(len(val_data)), eval_tf)
        self.test_set = _SkippableSubset(test_data, range(len(test_data)), eval_tf)
