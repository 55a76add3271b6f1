"""A built-in, offline classification task: coloured shapes on a cluttered background, stored in CIFAR-10's format.

Ten flip-symmetric silhouettes (so horizontal-flip augmentation never changes the class), each in a random light
colour, with random size, position, small rotation and stroke thickness, drawn over a darker, noisy gradient
background with random lines and blobs in any colour, plus an occasional line across the shape. Chance is 10%.
The shape is always lighter than the background: with random polarity too, a small ViT (patch 4, width 128,
4 layers) learned nothing in 400 steps, while with it, it reaches ~86% test top-1 in 3 epochs of 9k images.

The images are rendered with numpy only (arithmetic and square roots, no transcendental functions), from
``numpy.random.default_rng(seed)``, so the same arguments give byte-identical files. They are written once, in
CIFAR-10's python format, read by the CIFAR loader (torchvision's md5 checks, a data-only unpickler).

``task="relational"`` renders :mod:`.synthetic_relational` instead (two shapes; the class is their relation) on the
same background, written and read the same way.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from torch.utils.data import Dataset

from .cifar import CIFARDataModule, CorruptedDatasetError, DatasetSpec, SafeCIFAR10, _md5, check_integrity, dataset_files

__all__ = ["RELATIONAL_CLASSES", "SHAPE_CLASSES", "generate_shapes", "task_classes", "shapes_folder_name", "ShapesDataset", "SyntheticShapesDataModule"]

SHAPE_CLASSES = ("circle", "ring", "square", "square_frame", "diamond", "triangle", "plus", "x_cross", "horizontal_bar",
                 "vertical_bar")
# task="relational" (vision_attn.data.synthetic_relational): (same silhouette?) x (is the upper shape the larger?)
RELATIONAL_CLASSES = ("same_upper_larger", "same_upper_smaller", "different_upper_larger", "different_upper_smaller")
SHAPES_MEAN = (0.5, 0.5, 0.5)
SHAPES_STD = (0.5, 0.5, 0.5)

_NUM_TRAIN_BATCHES = 5  # like CIFAR-10: data_batch_1..5
_CHUNK = 512  # images rendered at once; fixed, because the random stream is drawn chunk by chunk
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))
_PICKLE_PROTOCOL = 4  # fixed, so the bytes do not change with the Python version's default
# Bump whenever the rendering changes: the folder name carries it, so data written by an older
# generator is never silently reused.
GENERATOR_VERSION = 2
RELATIONAL_VERSION = 1  # the same, for task="relational"
TASKS = ("shapes", "relational")


def shapes_folder_name(num_train: int = 10000, num_test: int = 2000, img_size: int = 32, seed: int = 0,
                       task: str = "shapes") -> str:
    """The folder (under ``root``) that :func:`generate_shapes` writes for these arguments."""
    version = GENERATOR_VERSION if task == "shapes" else RELATIONAL_VERSION
    return f"{task}-v{version}-{img_size}px-n{num_train}-t{num_test}-s{seed}-batches-py"


def task_classes(task: str = "shapes") -> tuple[str, ...]:
    """The class names of ``task`` (index = label)."""
    return RELATIONAL_CLASSES if task == "relational" else SHAPE_CLASSES


def _check_args(num_train: int, num_test: int, img_size: int, seed: int, task: str = "shapes") -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}; got {task!r}")
    if img_size < 32 or img_size % 32:
        # torchvision's CIFAR loader reshapes the stored rows into 32x32 blocks before we restore the real size.
        raise ValueError(f"img_size must be a positive multiple of 32 (32, 64, 96, ...); got {img_size}")
    n_classes = len(task_classes(task))
    if num_train < n_classes or num_test < 1:
        raise ValueError(f"need num_train >= {n_classes} and num_test >= 1; got num_train={num_train}, num_test={num_test}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")


# ---- rendering ---------------------------------------------------------------------------------------------------
def _shape_distance(name: str, u: np.ndarray, v: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) to a unit-size silhouette at ``(u, v)`` (v points down); ``k`` scales strokes."""
    au, av = np.abs(u), np.abs(v)
    if name == "circle":
        return np.sqrt(u * u + v * v) - 0.95
    if name == "ring":
        return np.abs(np.sqrt(u * u + v * v) - 0.78) - 0.21 * k
    if name == "square":
        return np.maximum(au, av) - 0.78
    if name == "square_frame":
        return np.abs(np.maximum(au, av) - 0.72) - 0.19 * k
    if name == "diamond":
        return (au + av - 1.12) * _INV_SQRT2
    if name == "triangle":  # equilateral, apex up, centroid at the origin, circumradius 1.12
        return np.maximum(v, np.float32(0.8660254) * au - np.float32(0.5) * v) - 0.56
    if name in ("plus", "x_cross"):
        if name == "x_cross":
            au, av = np.abs(u + v) * _INV_SQRT2, np.abs(u - v) * _INV_SQRT2
        t = 0.27 * k
        return np.minimum(np.maximum(au - 1.0, av - t), np.maximum(au - t, av - 1.0))
    if name == "horizontal_bar":
        return np.maximum(au - 1.15, av - 0.27 * k)
    if name == "vertical_bar":
        return np.maximum(au - 0.27 * k, av - 1.15)
    raise KeyError(name)


def _col(a: np.ndarray) -> np.ndarray:
    """``(n, ...)`` per-image values -> broadcastable against ``(n, S, S)``."""
    return a.reshape(-1, 1, 1)


def _blend(img: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> np.ndarray:
    """Paint ``color (n, 3)`` over ``img (n, 3, S, S)`` with coverage ``alpha (n, S, S)``."""
    diff = color[:, :, None, None] - img
    diff *= alpha[:, None]
    img += diff  # in place: the image is the largest array here
    return img


def _segment_alpha(xs, ys, a: np.ndarray, b: np.ndarray, half_width: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage ``(n, S, S)`` of segments ``a -> b`` (``(n, 2)`` pixel coordinates)."""
    dx, dy = _col(b[:, 0] - a[:, 0]), _col(b[:, 1] - a[:, 1])
    px, py = xs - _col(a[:, 0]), ys - _col(a[:, 1])
    t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-6), 0.0, 1.0)
    ex, ey = px - t * dx, py - t * dy
    return np.clip(_col(half_width) + 0.5 - np.sqrt(ex * ex + ey * ey), 0.0, 1.0)


def _light_colors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random light colours ``(n, 3)``, every channel in [0.55, 1]."""
    return 0.55 + 0.45 * rng.random((n, 3), dtype=np.float32)


def _contrasting_colors(rng: np.random.Generator, background: np.ndarray, min_l1: float = 0.75) -> np.ndarray:
    """Light colours ``(n, 3)`` at least ``min_l1`` (sum of channel differences) away from ``background``."""
    color = _light_colors(rng, len(background))
    bad = np.abs(color - background).sum(1) < min_l1
    while bad.any():
        color[bad] = _light_colors(rng, int(bad.sum()))
        bad = np.abs(color - background).sum(1) < min_l1
    return color


def _uniform(rng: np.random.Generator, lo, hi, shape) -> np.ndarray:
    """float32 samples in ``[lo, hi)`` of ``shape`` (``lo``/``hi`` may be per-image arrays)."""
    return (lo + (hi - lo) * rng.random(shape, dtype=np.float32)).astype(np.float32)


def _cluttered_background(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A dark noisy gradient with two lines and two soft blobs in random colours: ``(img (n, 3, S, S), base (n, 3))``."""
    f32, px = np.float32, size / 32.0
    grid = np.arange(size, dtype=f32) + 0.5  # pixel centres
    xs, ys = grid[None, None, :], grid[None, :, None]
    # a dark base colour (channels in [0, 0.45]), a linear gradient and per-pixel texture noise
    base = 0.45 * rng.random((n, 3), dtype=f32)
    slope = _uniform(rng, -0.3, 0.3, (n, 2)) / size
    ramp = _col(slope[:, 0]) * (xs - size / 2) + _col(slope[:, 1]) * (ys - size / 2)
    img = rng.random((n, 3, size, size), dtype=f32)
    img -= 0.5
    img *= 0.18
    img += base[:, :, None, None]
    img += ramp[:, None]
    for _ in range(2):
        a, b = _uniform(rng, -0.2 * size, 1.2 * size, (n, 2)), _uniform(rng, -0.2 * size, 1.2 * size, (n, 2))
        alpha = _segment_alpha(xs, ys, a, b, _uniform(rng, 0.3, 0.8, (n,)) * px) * _col(_uniform(rng, 0.35, 1.0, (n,)))
        img = _blend(img, alpha, rng.random((n, 3), dtype=f32))
    for _ in range(2):
        c, r = _uniform(rng, 0, size, (n, 2)), _uniform(rng, 1.5, 3.5, (n,)) * px
        d2 = ((xs - _col(c[:, 0])) ** 2 + (ys - _col(c[:, 1])) ** 2) / _col(r * r)
        alpha = np.clip(1.0 - d2, 0.0, 1.0) ** 2 * _col(_uniform(rng, 0.4, 0.9, (n,)))
        img = _blend(img, alpha, rng.random((n, 3), dtype=f32))
    return img, base


def _occlude_and_quantize(rng: np.random.Generator, img: np.ndarray, probability: float) -> np.ndarray:
    """With ``probability`` a line across the image (partial occlusion), then sensor noise; ``img`` -> uint8."""
    n, size, px = len(img), img.shape[-1], img.shape[-1] / 32.0
    grid = np.arange(size, dtype=np.float32) + 0.5
    xs, ys = grid[None, None, :], grid[None, :, None]
    a, b = _uniform(rng, -0.2 * size, 1.2 * size, (n, 2)), _uniform(rng, -0.2 * size, 1.2 * size, (n, 2))
    width = _uniform(rng, 0.3, 0.6, (n,)) * px
    alpha = _segment_alpha(xs, ys, a, b, width) * _col((rng.random(n) < probability) * _uniform(rng, 0.4, 0.9, (n,)))
    img = _blend(img, alpha, rng.random((n, 3), dtype=np.float32))
    noise = rng.random(img.shape, dtype=np.float32)  # sensor noise
    noise -= 0.5
    noise *= 0.12
    img += noise
    np.clip(img, 0.0, 1.0, out=img)
    img *= 255.0
    img += 0.5
    return img.astype(np.uint8)


def _render(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """Images ``(n, 3, size, size)`` uint8 (channel-planar, like CIFAR's rows) of the shapes ``labels (n,)``."""
    n, f32 = len(labels), np.float32
    grid = np.arange(size, dtype=f32) + 0.5  # pixel centres
    xs, ys = grid[None, None, :], grid[None, :, None]

    def uniform(lo, hi, shape=(n,)):
        return _uniform(rng, lo, hi, shape)

    img, base = _cluttered_background(rng, n, size)
    # the shape: size s (px, ~half-extent), centre, rotation within +-15 degrees, stroke thickness factor k
    s = uniform(0.20, 0.32) * size
    cx, cy = uniform(0, 1) * (size - 2 * s) + s, uniform(0, 1) * (size - 2 * s) + s
    tan_half = uniform(-0.1317, 0.1317)  # tan(7.5 deg): rotation from the rational parametrisation (no trig)
    cos, sin = (1 - tan_half**2) / (1 + tan_half**2), 2 * tan_half / (1 + tan_half**2)
    k = uniform(0.8, 1.25)
    dx, dy = xs - _col(cx), ys - _col(cy)
    u = (dx * _col(cos) + dy * _col(sin)) / _col(s)
    v = (dy * _col(cos) - dx * _col(sin)) / _col(s)
    dist = np.empty((n, size, size), dtype=f32)
    for c, name in enumerate(SHAPE_CLASSES):
        sel = labels == c
        if sel.any():
            dist[sel] = _shape_distance(name, u[sel], v[sel], _col(k[sel])) * _col(s[sel])
    shape_color = _contrasting_colors(rng, base)
    img = _blend(img, np.clip(0.5 - dist, 0.0, 1.0), shape_color)
    return _occlude_and_quantize(rng, img, 0.25)  # sometimes a line crosses the shape


def render_shapes(num: int, img_size: int = 32, seed: int = 0, task: str = "shapes") -> tuple[np.ndarray, np.ndarray]:
    """``num`` images ``(num, 3, img_size, img_size)`` uint8 and balanced labels ``(num,)`` int64 of ``task``.

    ``seed``: an int or a ``numpy.random.SeedSequence``.
    """
    render = _render
    if task == "relational":
        from .synthetic_relational import render_relational as render  # it imports this module's helpers
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num) % len(task_classes(task)))
    images = np.empty((num, 3, img_size, img_size), dtype=np.uint8)
    for start in range(0, num, _CHUNK):
        images[start : start + _CHUNK] = render(rng, labels[start : start + _CHUNK], img_size)
    return images, labels


# ---- writing -----------------------------------------------------------------------------------------------------
def _write_batch(path: Path, images: np.ndarray, labels: np.ndarray, batch_label: str) -> None:
    # CIFAR's layout: one row per image, the R plane, then G, then B, each row-major
    data = np.ascontiguousarray(images.reshape(len(images), -1))
    entry = {"batch_label": batch_label, "labels": [int(y) for y in labels], "data": data}
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=_PICKLE_PROTOCOL)


def generate_shapes(root: str | os.PathLike = "data", num_train: int = 10000, num_test: int = 2000, img_size: int = 32,
                    seed: int = 0, task: str = "shapes") -> Path:
    """Render the shapes (or relational) task once and store it in CIFAR-10's python format; return the folder.

    Writes ``root/`` :func:`shapes_folder_name` ``/`` with ``data_batch_1..5`` (the
    train images split evenly), ``test_batch``, ``batches.meta`` (``label_names``) and ``checksums.json`` (md5 of
    each). Each batch is a pickled ``{"data": uint8 (N, 3 * img_size**2) channel-planar, "labels": list[int]}``.
    Does nothing if the folder exists. The folder is built under a temporary name and renamed into place, so
    concurrent processes (DDP) never see a half-written dataset. Train and test come from independent streams of
    ``seed``, so the test set does not depend on ``num_train``.
    """
    _check_args(num_train, num_test, img_size, seed, task)
    root = Path(root)
    final = root / shapes_folder_name(num_train, num_test, img_size, seed, task)
    if final.exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
        train_x, train_y = render_shapes(num_train, img_size, train_seq, task)
        for i, part in enumerate(np.array_split(np.arange(num_train), _NUM_TRAIN_BATCHES), start=1):
            _write_batch(tmp / f"data_batch_{i}", train_x[part], train_y[part], f"training batch {i} of {_NUM_TRAIN_BATCHES}")
        test_x, test_y = render_shapes(num_test, img_size, test_seq, task)
        _write_batch(tmp / "test_batch", test_x, test_y, "testing batch 1 of 1")
        meta = {"label_names": list(task_classes(task)), "num_cases_per_batch": -(-num_train // _NUM_TRAIN_BATCHES), "num_vis": 3 * img_size**2}
        with open(tmp / "batches.meta", "wb") as f:
            pickle.dump(meta, f, protocol=_PICKLE_PROTOCOL)
        names = [f"data_batch_{i}" for i in range(1, _NUM_TRAIN_BATCHES + 1)] + ["test_batch", "batches.meta"]
        (tmp / "checksums.json").write_text(json.dumps({name: _md5(tmp / name) for name in names}, indent=1) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.exists():  # not a lost race with another process: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---- reading -----------------------------------------------------------------------------------------------------
class ShapesDataset(SafeCIFAR10):
    """The shapes task through the CIFAR-10 loader (torchvision's md5 integrity check, a data-only unpickler).

    Args:
        root: the folder given to :func:`generate_shapes`.
        train: the training split (else the test split).
        transform, target_transform: as for torchvision's ``CIFAR10`` (``transform`` receives a PIL image).
        num_train, num_test, img_size, seed, task: the generation arguments; they name the folder.
        base_folder: read this folder under ``root`` instead (e.g. ``generate_shapes(...).name``).

    ``data`` is ``(N, img_size, img_size, 3)`` uint8, ``targets`` a list of class ids, ``classes`` the shape names.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        transform: Optional[Callable] = None,
        target_transform: Optional[Callable] = None,
        *,
        num_train: int = 10000,
        num_test: int = 2000,
        img_size: int = 32,
        seed: int = 0,
        task: str = "shapes",
        base_folder: Optional[str] = None,
    ) -> None:
        self.base_folder = base_folder or shapes_folder_name(num_train, num_test, img_size, seed, task)
        folder = Path(root) / self.base_folder
        sums_path = folder / "checksums.json"
        if not sums_path.is_file():
            raise FileNotFoundError(
                f"{sums_path} not found: generate the shapes data first with generate_shapes({str(root)!r}, "
                f"num_train={num_train}, num_test={num_test}, img_size={img_size}, seed={seed}, task={task!r}) "
                "(SyntheticShapesDataModule.prepare_data does this)"
            )
        try:
            sums = json.loads(sums_path.read_text())
            self.train_list = [[f"data_batch_{i}", sums[f"data_batch_{i}"]] for i in range(1, _NUM_TRAIN_BATCHES + 1)]
            self.test_list = [["test_batch", sums["test_batch"]]]
            self.meta = {"filename": "batches.meta", "key": "label_names", "md5": sums["batches.meta"]}
        except (ValueError, KeyError, TypeError) as err:
            raise CorruptedDatasetError(f"{sums_path} is unreadable or incomplete ({err!r}); delete {folder} to regenerate it") from err
        try:
            super().__init__(root, train=train, transform=transform, target_transform=target_transform, download=False)
        except RuntimeError:  # torchvision's "not found or corrupted": name the file
            check_integrity(folder, dataset_files(self), f"Delete {folder} to regenerate it.")
            raise
        # torchvision reshapes rows to 32x32; restore the stored size (a no-op at 32 px)
        rows = self.data.transpose(0, 3, 1, 2).reshape(len(self.targets), -1)
        side = math.isqrt(rows.shape[1] // 3)
        self.data = rows.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)


class SyntheticShapesDataModule(CIFARDataModule):
    """The shapes task (generated on first use, offline) with CIFARDataModule's splits, fractions and loaders.

    Args:
        root: where the generated folder goes.
        num_train, num_test, img_size, seed: generation arguments (see :func:`generate_shapes`).
        batch_size, num_workers, train_fraction, fraction_seed, val_split, augment, shuffle, predict_root: as for
            :class:`CIFARDataModule`.
        task: ``"shapes"`` (10 classes: which silhouette) or ``"relational"`` (4 classes: how two shapes relate,
            :mod:`vision_attn.data.synthetic_relational`).
    """

    datasets = {
        "shapes": DatasetSpec(ShapesDataset, SHAPES_MEAN, SHAPES_STD, len(SHAPE_CLASSES), "Synthetic shapes"),
        "relational": DatasetSpec(ShapesDataset, SHAPES_MEAN, SHAPES_STD, len(RELATIONAL_CLASSES), "Synthetic relational shapes"),
    }

    def __init__(
        self,
        root: str = "data",
        num_train: int = 10000,
        num_test: int = 2000,
        img_size: int = 32,
        seed: int = 0,
        batch_size: int = 128,
        num_workers: int = 0,
        train_fraction: float = 1.0,
        fraction_seed: int = 0,
        val_split: int = 1000,
        augment: bool = True,
        shuffle: bool = True,
        task: str = "shapes",
        predict_root: Optional[str] = None,
    ):
        _check_args(num_train, num_test, img_size, seed, task)
        super().__init__(
            name=task,
            root=root,
            batch_size=batch_size,
            num_workers=num_workers,
            train_fraction=train_fraction,
            fraction_seed=fraction_seed,
            val_split=val_split,
            download=False,
            img_size=None,
            augment=augment,
            shuffle=shuffle,
            predict_root=predict_root,
        )
        # the base class saved its arguments merged with ours; drop the ones this class fixes
        self.save_hyperparameters(ignore=["name", "download"])
        self.num_train, self.num_test, self.seed, self.task = num_train, num_test, seed, task
        self.input_size = img_size

    @property
    def dataset_dir(self) -> Path:
        return Path(self.root) / shapes_folder_name(self.num_train, self.num_test, self.input_size, self.seed, self.task)

    def load_dataset(self, train: bool) -> Dataset:
        return ShapesDataset(self.root, train=train, base_folder=self.dataset_dir.name)

    def prepare_data(self) -> None:
        if self.skip_prepare_for_predict():
            return
        generate_shapes(self.root, self.num_train, self.num_test, self.input_size, self.seed, self.task)

    def check_files(self) -> None:
        # generation is deterministic and atomic, so any process may do it (e.g. setup() without prepare_data())
        self.prepare_data()

    @property
    def classes(self) -> list[str]:
        return list(task_classes(self.task))
