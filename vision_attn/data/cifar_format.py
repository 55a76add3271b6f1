"""Reading CIFAR's python format safely: a data-only unpickler and torchvision's CIFAR classes on top of it.

torchvision reads these batches with ``pickle.load``, which runs whatever the file says; a data folder (and its
checksum file) writable by someone else is then a way to run code. Here only plain data is rebuilt.
"""

from __future__ import annotations

import importlib
import os
import pickle
from typing import Any, Callable, Optional

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100, VisionDataset
from torchvision.datasets.utils import check_integrity as check_md5

__all__ = [
    "CorruptedDatasetError",
    "UnsafeDataError",
    "read_cifar_file",
    "check_cifar_batch",
    "SafeCIFAR10",
    "SafeCIFAR100",
]


class CorruptedDatasetError(RuntimeError):
    """A dataset file exists but fails its md5 check."""


class UnsafeDataError(CorruptedDatasetError):
    """A dataset file is a pickle that would run code or build objects other than plain data; it was not run."""


# What CIFAR's python batches may contain besides dicts, lists, str, bytes and numbers: numpy arrays (and, in pickles
# of protocol 2, bytes spelled as _codecs.encode). Anything else (os.system, builtins.eval, ...) is refused unrun.
_CIFAR_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


def _plain_dtype(*args, **kwargs) -> np.dtype:
    dtype = np.dtype(*args, **kwargs)
    if dtype.hasobject:  # an object array would unpickle arbitrary objects element by element
        raise pickle.UnpicklingError(f"object arrays (dtype {dtype}) are not plain data")
    return dtype


class _CIFARUnpickler(pickle.Unpickler):
    """Unpickles plain data only; ``find_class`` refuses every global outside :data:`_CIFAR_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"it imports {module}.{name}")
        if (module, name) == ("numpy", "dtype"):
            return _plain_dtype
        if module.startswith("numpy.core."):  # numpy >= 2 moved numpy.core to numpy._core (old CIFAR files)
            module = "numpy._core." + module.split(".", 2)[2]
        return getattr(importlib.import_module(module), name)


def read_cifar_file(path: str | os.PathLike) -> Any:
    """Unpickle one CIFAR-format python batch (``data_batch_1``, ``batches.meta``, ...) refusing anything but data.

    Allows dicts, lists, tuples, str, bytes, numbers and numpy arrays of plain dtypes. A pickle that would call
    anything else (``os.system``, ``eval``, a class) raises :class:`UnsafeDataError` naming the file, without running it.
    """
    with open(path, "rb") as f:
        try:
            return _CIFARUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as err:
            raise UnsafeDataError(f"{path} is not plain CIFAR data: {err}; refused without running it") from None
        except (EOFError, ValueError, TypeError) as err:
            raise CorruptedDatasetError(f"{path} is not a readable CIFAR batch: {err!r}") from None


def check_cifar_batch(entry: Any, path: str | os.PathLike) -> tuple[np.ndarray, list]:
    """``(data (N, 3*S*S) uint8, labels: N ints)`` of an unpickled training/test batch, or a
    :class:`CorruptedDatasetError` naming the file, the field, what was expected and what was found."""
    key = "labels" if isinstance(entry, dict) and "labels" in entry else "fine_labels"
    if not isinstance(entry, dict) or "data" not in entry or key not in entry:
        found = sorted(map(str, entry)) if isinstance(entry, dict) else type(entry).__name__
        raise CorruptedDatasetError(
            f"{path}: expected a dict with 'data' and 'labels' (or 'fine_labels'); found {found}"
        )
    data, labels = entry["data"], entry[key]
    side = int(round((data.shape[1] / 3) ** 0.5)) if isinstance(data, np.ndarray) and data.ndim == 2 else 0
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or not side or data.shape[1] != 3 * side * side:
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise CorruptedDatasetError(
            f"{path}: 'data' must be a uint8 array of shape (N, 3*S*S) (SxS RGB rows, S=32 for CIFAR); found {found}"
        )
    if (
        not isinstance(labels, (list, tuple, np.ndarray))
        or len(labels) != len(data)
        or not all(isinstance(y, (int, np.integer)) and not isinstance(y, bool) for y in labels)
    ):
        n = len(labels) if isinstance(labels, (list, tuple, np.ndarray)) else type(labels).__name__
        raise CorruptedDatasetError(
            f"{path}: '{key}' must be {len(data)} ints (one per image); found {n} entries or non-integer labels"
        )
    return data, [int(y) for y in labels]


class SafeCIFAR10(CIFAR10):
    """torchvision's ``CIFAR10`` (same files, md5 checks, ``data``/``targets``/``classes``) read by
    :func:`read_cifar_file` instead of ``pickle.load``: whoever can write the data folder cannot run code."""

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        transform: Optional[Callable] = None,
        target_transform: Optional[Callable] = None,
        download: bool = False,
    ) -> None:
        VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        self.train = train
        if download:
            self.download()
        if not self._check_integrity():
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
        data, self.targets = [], []
        for name, _ in self.train_list if train else self.test_list:
            path = os.path.join(self.root, self.base_folder, name)
            images, labels = check_cifar_batch(read_cifar_file(path), path)
            data.append(images)
            self.targets.extend(labels)
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))  # HWC
        self._load_meta()

    def _load_meta(self) -> None:
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        if not check_md5(path, self.meta["md5"]):
            raise RuntimeError("Dataset metadata file not found or corrupted. You can use download=True to download it")
        self.classes = read_cifar_file(path)[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class SafeCIFAR100(SafeCIFAR10):
    """CIFAR-100 (torchvision's file list and meta) through :func:`read_cifar_file`."""

    base_folder, url, filename, tgz_md5 = CIFAR100.base_folder, CIFAR100.url, CIFAR100.filename, CIFAR100.tgz_md5
    train_list, test_list, meta = CIFAR100.train_list, CIFAR100.test_list, CIFAR100.meta
