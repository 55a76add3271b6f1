"""CIFAR-10/100 as a LightningDataModule: torchvision's loaders, albumentations transforms, seeded data fractions.

Splits, for a data-size sweep:
- validation: ``val_split`` images held out of the official train split, stratified, with a FIXED seed, so the
  validation images are the same for every ``train_fraction`` and ``fraction_seed`` (``val_split=0``: validate on
  the test split);
- training: a stratified ``train_fraction`` of the remaining images, chosen by ``fraction_seed``; smaller fractions
  are subsets of larger ones for the same seed;
- test: the full official test split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from .cifar_format import CorruptedDatasetError, SafeCIFAR10, SafeCIFAR100, UnsafeDataError, read_cifar_file
from .images import PredictFolderMixin
from .resumable import ResumableSampler, SeededSamples
from .transforms import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, eval_transform, train_transform

__all__ = [
    "CIFARDataModule",
    "SplitLoadersMixin",
    "stratified_subset",
    "TransformedSubset",
    "CorruptedDatasetError",
    "UnsafeDataError",
    "read_cifar_file",
    "SafeCIFAR10",
    "SafeCIFAR100",
]

# Stream tags keep the validation hold-out and the training subset draws independent of each other.
_SUBSET_STREAM = 1
_HOLDOUT_STREAM = 2
VAL_SEED = 0  # the validation hold-out never depends on fraction_seed


def _class_permutations(labels: np.ndarray, seed: int, stream: int) -> dict[int, np.ndarray]:
    """Per class: its indices into ``labels`` in a seeded random order.

    Each class has its own generator (seeded by stream, seed and class id), so a class's order depends on nothing but
    the seed and which images carry that label.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    out = {}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng = np.random.default_rng([stream, int(seed), int(c)])
        out[int(c)] = idx[rng.permutation(len(idx))]
    return out


def stratified_subset(labels: Sequence[int] | np.ndarray | torch.Tensor, fraction: float, seed: int) -> list[int]:
    """Sorted indices of a class-stratified random ``fraction`` of a dataset.

    Per class, the indices are put in a seeded random order and the first ``max(1, round(fraction * n_class))`` kept.
    So the same seed gives the same images (whatever else changes), subsets are nested (fraction 0.1 is inside 0.2
    for the same seed), and class proportions are kept to within one image per class.

    Args:
        labels: class id of every image, length ``N``.
        fraction: in (0, 1].
        seed: non-negative integer.
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1]; got {fraction}")
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    keep = [
        perm[: max(1, round(fraction * len(perm)))]
        for perm in _class_permutations(labels, seed, _SUBSET_STREAM).values()
    ]
    return sorted(int(i) for i in np.concatenate(keep)) if keep else []


def stratified_holdout(labels: Sequence[int] | np.ndarray, n: int, seed: int = VAL_SEED) -> list[int]:
    """Sorted indices of exactly ``n`` images, split over classes in proportion to their sizes (largest remainder)."""
    labels = np.asarray(labels).reshape(-1)
    if not 0 <= n < len(labels):
        raise ValueError(f"val_split must be in [0, {len(labels)}) (the train split has {len(labels)} images); got {n}")
    perms = _class_permutations(labels, seed, _HOLDOUT_STREAM)
    sizes = np.array([len(p) for p in perms.values()])
    exact = n * sizes / len(labels)
    quota = np.floor(exact).astype(int)
    # hand out what flooring lost to the classes with the largest remainders (ties: lower class id first)
    for k in np.argsort(-(exact - quota), kind="stable")[: n - quota.sum()]:
        quota[k] += 1
    keep = [perm[:q] for perm, q in zip(perms.values(), quota)]
    return sorted(int(i) for i in np.concatenate(keep))


class TransformedSubset(Dataset):
    """``dataset[indices[i]]`` with ``transform`` applied to the image; one loaded dataset serves several splits."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], transform: Optional[Callable] = None):
        self.dataset = dataset
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image, target = self.dataset[self.indices[i]]
        return (self.transform(image) if self.transform is not None else image), target


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    train: bool,
    shuffle: Optional[bool] = None,
    collate_fn: Optional[Callable] = None,
) -> DataLoader:
    """DataLoader with the house settings: training shuffles (unless ``shuffle=False``) and drops the last partial batch.

    A training loader draws its order and each image's augmentation from a :class:`~.resumable.ResumableSampler`
    (under torch.distributed process ``r`` of ``W`` takes every ``W``-th image of the order), so a fit resumes at any
    batch; no loader draws from torch's global generator (its own ``generator`` seeds the workers).
    """
    shuffle = train if shuffle is None else shuffle
    sampler = ResumableSampler(dataset, shuffle=shuffle) if train else None
    return DataLoader(
        SeededSamples(dataset) if train else dataset,
        batch_size=batch_size,
        shuffle=None if train else shuffle,
        sampler=sampler,
        # a subset smaller than one batch would otherwise give an empty epoch
        drop_last=train and len(dataset) >= batch_size,
        num_workers=num_workers,
        # fresh workers each epoch (not persistent ones): they only run SeededSamples, whose seeds come with the keys
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        collate_fn=collate_fn,
        generator=torch.Generator(),  # worker seeds from here, not from the global generator a checkpoint restores
    )


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dataset_files(dataset: Any) -> list[tuple[str, str]]:
    """``(file name, md5)`` of every file a torchvision CIFAR-style dataset (class or instance) reads."""
    return [(name, md5) for name, md5 in dataset.train_list + dataset.test_list] + [
        (dataset.meta["filename"], dataset.meta["md5"])
    ]


def check_integrity(folder: Path, files: Sequence[tuple[str, str]], hint: str) -> None:
    """Raise naming the first file in ``folder`` that is missing or whose md5 differs."""
    for name, md5 in files:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing. {hint}")
        found = _md5(path)
        if found != md5:
            raise CorruptedDatasetError(f"{path} is corrupted or was modified: md5 {found}, expected {md5}. {hint}")


@dataclass(frozen=True)
class DatasetSpec:
    """What a datamodule needs to know about one CIFAR-format dataset."""

    dataset_cls: type
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    title: str


class SplitLoadersMixin:
    """Train/val/test loaders over the ``train_set``/``val_set``/``test_set`` that ``setup()`` builds."""

    collate_fn: Optional[Callable] = None  # None: the DataLoader's default
    shuffle: bool = True  # a datamodule may set False (a fixed order)

    def train_dataloader(self) -> DataLoader:
        return make_loader(
            self._need("train_set"),
            self.batch_size,
            self.num_workers,
            train=True,
            shuffle=self.shuffle,
            collate_fn=self.collate_fn,
        )

    def val_dataloader(self) -> DataLoader:
        return make_loader(
            self._need("val_set"), self.batch_size, self.num_workers, train=False, collate_fn=self.collate_fn
        )

    def test_dataloader(self) -> DataLoader:
        return make_loader(
            self._need("test_set"), self.batch_size, self.num_workers, train=False, collate_fn=self.collate_fn
        )

    def _need(self, attr: str) -> Any:
        value = getattr(self, attr)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.{attr} is not built yet: call setup() first")
        return value


class CIFARDataModule(SplitLoadersMixin, PredictFolderMixin, pl.LightningDataModule):
    """CIFAR-10/100 with a fixed validation hold-out and a seeded, stratified training fraction.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: folder holding ``cifar-10-batches-py`` / ``cifar-100-python``.
        batch_size: images per batch, per process.
        num_workers: DataLoader worker processes.
        train_fraction: fraction of the (non-validation) training images to train on, in (0, 1].
        fraction_seed: picks which images make up the fraction.
        val_split: images held out of the official train split for validation (0: validate on the test split).
        download: download the dataset in ``prepare_data`` if missing (never otherwise).
        img_size: resize images to ``img_size x img_size`` (e.g. 224 to fine-tune ImageNet models); None keeps 32.
        augment: random crop and flip on training images (False: training images get the evaluation transform).
        shuffle: shuffle the training images each epoch (False: a fixed order, e.g. to compare runs step by step;
            under DDP each process then takes every world-size-th image of that order).
        predict_root: a folder, image file or glob of your own images for ``predict`` (``tools/train.py predict
            --data.init_args.predict_root DIR``): resized to the training size (``img_size``, else 32) and normalised
            as the evaluation images; the dataset's own files are then not needed.

    Subclasses swap the dataset by overriding ``datasets`` (name -> :class:`DatasetSpec`) and, if the dataset class
    takes other arguments, ``load_dataset``, ``dataset_dir``, ``prepare_data`` and ``missing_hint``.
    """

    datasets: dict[str, DatasetSpec] = {
        "cifar10": DatasetSpec(SafeCIFAR10, CIFAR10_MEAN, CIFAR10_STD, 10, "CIFAR-10"),
        "cifar100": DatasetSpec(SafeCIFAR100, CIFAR100_MEAN, CIFAR100_STD, 100, "CIFAR-100"),
    }
    input_size = 32  # side of the stored images

    def __init__(
        self,
        name: str = "cifar10",
        root: str = "data",
        batch_size: int = 128,
        num_workers: int = 2,
        train_fraction: float = 1.0,
        fraction_seed: int = 0,
        val_split: int = 5000,
        download: bool = False,
        img_size: Optional[int] = None,
        augment: bool = True,
        shuffle: bool = True,
        predict_root: Optional[str] = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if name not in self.datasets:
            raise ValueError(f"{type(self).__name__}: name must be one of {sorted(self.datasets)}; got {name!r}")
        if not 0.0 < float(train_fraction) <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1]; got {train_fraction}")
        if val_split < 0:
            raise ValueError(f"val_split must be >= 0; got {val_split}")
        self.name = name
        self.spec = self.datasets[name]
        self.root = root
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_fraction = float(train_fraction)
        self.fraction_seed = fraction_seed
        self.val_split = val_split
        self.download = download
        self.img_size = img_size
        self.augment = augment
        self.shuffle = shuffle
        self.predict_root = predict_root
        self.train_set: Optional[TransformedSubset] = None
        self.val_set: Optional[TransformedSubset] = None
        self.test_set: Optional[TransformedSubset] = None
        self.val_indices: list[int] = []  # into the official train split
        self.train_indices: list[int] = []  # into the official train split
        self._classes: Optional[list[str]] = None

    # ---- what a subclass may override -------------------------------------------------------------------------
    @property
    def dataset_dir(self) -> Path:
        """The folder the dataset files live in."""
        return Path(self.root) / self.spec.dataset_cls.base_folder

    def missing_hint(self) -> str:
        return "Pass download=True (or --data.init_args.download true on the CLI) to download it."

    def load_dataset(self, train: bool) -> Dataset:
        """The untransformed official train or test split (exposing ``targets`` and ``classes``)."""
        return self.spec.dataset_cls(self.root, train=train, transform=None, download=False)

    # ---- LightningDataModule -----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download if ``download=True``; otherwise make sure the files are there (never touches the network)."""
        if self.skip_prepare_for_predict():
            return
        if self.download:
            for train in (True, False):
                self.spec.dataset_cls(self.root, train=train, download=True)
        self.check_files()

    def check_files(self) -> None:
        """Raise FileNotFoundError naming the folder if any dataset file is missing (md5s are checked on load)."""
        folder = self.dataset_dir
        missing = [name for name, _ in dataset_files(self.spec.dataset_cls) if not (folder / name).is_file()]
        if missing:
            where = f"{folder}" if folder.is_absolute() else f"{folder} (absolute: {folder.resolve()})"
            raise FileNotFoundError(
                f"{self.spec.title} not found: looked in {where}, missing {', '.join(missing)}. {self.missing_hint()}"
            )

    def setup(self, stage: Optional[str] = None) -> None:
        if stage == "predict" and self.predict_root:
            self._predict_class_names()
            return
        if self.train_set is not None:
            return
        # DDP ranks other than 0 skip prepare_data, so check again here.
        self.check_files()
        train_data = self._load(train=True)
        test_data = self._load(train=False)
        self._classes = list(train_data.classes)
        labels = np.asarray(train_data.targets)

        mean, std = self.spec.mean, self.spec.std
        eval_tf = eval_transform(mean, std, self.img_size)
        train_tf = (
            train_transform(mean, std, self.img_size, crop_padding=self.input_size // 8, input_size=self.input_size)
            if self.augment
            else eval_tf
        )

        all_idx = np.arange(len(labels))
        self.val_indices = stratified_holdout(labels, self.val_split, seed=VAL_SEED) if self.val_split else []
        pool = np.setdiff1d(all_idx, np.asarray(self.val_indices, dtype=int))
        self.train_indices = sorted(
            int(i) for i in pool[stratified_subset(labels[pool], self.train_fraction, self.fraction_seed)]
        )

        self.train_set = TransformedSubset(train_data, self.train_indices, train_tf)
        test_all = TransformedSubset(test_data, range(len(test_data)), eval_tf)
        self.val_set = TransformedSubset(train_data, self.val_indices, eval_tf) if self.val_split else test_all
        self.test_set = test_all

    def _load(self, train: bool) -> Dataset:
        try:
            return self.load_dataset(train)
        except CorruptedDatasetError:
            raise
        except RuntimeError as err:  # torchvision's "not found or corrupted": say which file
            check_integrity(self.dataset_dir, dataset_files(self.spec.dataset_cls), self.corrupted_hint())
            raise err

    def _predict_class_names(self) -> None:
        # the names come from the dataset's files when they are here; predicting does not need them otherwise
        folder = self.dataset_dir
        if self._classes is None and all((folder / name).is_file() for name, _ in dataset_files(self.spec.dataset_cls)):
            self._classes = list(self._load(train=False).classes)

    def predict_transform(self) -> Callable:
        """Your images for ``predict``: resized to the training images' size, normalised as the evaluation images."""
        return eval_transform(self.spec.mean, self.spec.std, self.img_size or self.input_size)

    def corrupted_hint(self) -> str:
        return f"Delete {self.dataset_dir} and download it again (download=True)."

    # ---- facts -------------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def classes(self) -> list[str]:
        """Class names, index = label (available after ``setup``)."""
        return self._need("_classes")

    @property
    def n_train(self) -> int:
        """Number of training images after the validation hold-out and ``train_fraction`` (after ``setup``)."""
        return len(self._need("train_set"))
