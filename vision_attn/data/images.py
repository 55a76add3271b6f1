"""Your own image files as model input: find them, read any file PIL reads as RGB, batch them for predict.

One loader serves ``tools/predict.py`` (:mod:`vision_attn.run.predict`) and every datamodule's
``predict_dataloader`` (``--data.init_args.predict_root DIR``), so both see the same tensors.

Reading (:func:`load_rgb`): EXIF orientation is applied (``PIL.ImageOps.exif_transpose``); grayscale, palette,
CMYK and other modes become RGB; 16-bit (and 32-bit integer) images are scaled from 0..65535 to 0..255; a
transparent image (RGBA, LA, or a palette with transparency) is composited on WHITE (not its alpha dropped, which
would show whatever colour the transparent pixels happen to hold).

A file that cannot be read does not stop the others: its item is ``(None, {"file", "index", "error"})`` and the
collate functions leave it out of the image tensor but keep it in the info list (see :func:`collate_images`).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..ops import pad_images_to_batch

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "ImageTooLargeError",
    "find_images",
    "load_rgb",
    "image_size",
    "ImageFiles",
    "SizeGroupedBatchSampler",
    "collate_images",
    "collate_detection",
    "image_loader",
    "PredictFolderMixin",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
_WHITE = (255, 255, 255, 255)
MAX_PIXELS = 89_478_485  # PIL's DecompressionBombWarning threshold: ~0.25 GiB as 8-bit RGB


def find_images(inputs: Sequence[str]) -> List[str]:
    """The files named by ``inputs``, in order, each once: a folder gives its image files (by extension,
    recursively, sorted), a glob pattern its matches (sorted); any other entry is kept as given, so a missing
    file is reported as failed rather than silently dropped."""
    found: List[str] = []
    for item in inputs:
        item = os.path.expanduser(str(item))
        if os.path.isdir(item):
            found += sorted(
                str(p) for p in Path(item).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            )
        elif not os.path.exists(item) and glob.has_magic(item):
            found += sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
        else:
            found.append(item)
    return list(dict.fromkeys(found))


def _to_8bit(im: Image.Image) -> Image.Image:
    # 16-bit PNG/TIFF open as I;16* or I (32-bit int): scale 0..65535 to 0..255; float images are clipped to 0..255
    arr = np.asarray(im, dtype=np.float64)
    if im.mode != "F":
        arr = arr / 257.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


class ImageTooLargeError(ValueError):
    """An image file whose header declares more pixels than ``max_pixels``: refused before decoding it."""


def _tensor_to_pil(t: Tensor) -> Image.Image:
    """``(3, H, W)`` or ``(1, H, W)`` RGB, float in [0, 1] or uint8 -> a PIL RGB image."""
    t = t.detach().cpu()
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(
            f"image tensor: expected (3, H, W) or (1, H, W) RGB (floats in [0, 1] or uint8); got shape {tuple(t.shape)}"
        )
    if t.is_floating_point():
        t = (t.float().clamp(0, 1) * 255).round()
    return Image.fromarray(t.to(torch.uint8).expand(3, -1, -1).permute(1, 2, 0).contiguous().numpy(), "RGB")


def load_rgb(path: str | os.PathLike | Image.Image | Tensor, max_pixels: Optional[int] = MAX_PIXELS) -> Image.Image:
    """The image file (or a PIL image, or an RGB tensor ``(3, H, W)`` in [0, 1] or uint8) as an upright 8-bit RGB PIL
    image (see the module docstring for what is converted how).

    ``max_pixels``: the most pixels (width x height, from a file's header, before any decoding) accepted; a larger
    file raises :class:`ImageTooLargeError` (a 17 KB PNG can declare 12000 x 12000 and decode to gigabytes). None: no
    limit but PIL's own (2 x ``PIL.Image.MAX_IMAGE_PIXELS``)."""
    if isinstance(path, Tensor):
        return _tensor_to_pil(path)
    if isinstance(path, Image.Image):
        im = path
    else:
        with Image.open(path) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageTooLargeError(
                    f"{path}: {w}x{h} = {w * h} pixels, more than max_pixels={max_pixels} "
                    "(raise --max-pixels to read it)"
                )
            im = ImageOps.exif_transpose(im)
            im.load()
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        im = _to_8bit(im)
    if im.mode in ("P", "L", "RGB") and "transparency" in im.info:  # a palette entry or colour marked transparent
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        background = Image.new("RGBA", im.size, _WHITE)
        background.alpha_composite(im.convert("RGBA"))
        im = background
    return im if im.mode == "RGB" else im.convert("RGB")


def image_size(path: str | os.PathLike | Image.Image | Tensor) -> Optional[Tuple[int, int]]:
    """``(height, width)`` of the upright image from the file's header (no decoding); None if unreadable."""
    if isinstance(path, Tensor):
        return (int(path.shape[-2]), int(path.shape[-1])) if path.dim() == 3 else None
    if isinstance(path, Image.Image):
        return path.size[1], path.size[0]
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientations that swap width and height
                w, h = h, w
            return h, w
    except Exception:
        return None


class ImageFiles(Dataset):
    """Image files through ``transform`` (a callable PIL RGB image -> ``(3, H, W)`` tensor). Items may also be PIL
    images or RGB tensors ``(3, H, W)`` (in [0, 1] or uint8): their ``"file"`` is None.

    Item ``i``: ``(image (3, H, W), info)`` with info ``{"file", "index", "width", "height", "orig_size",
    "size"}`` (``width``/``height``/``orig_size (2,) = (h, w)`` of the upright file, ``size`` after the
    transform), or ``(None, {"file", "index", "error"})`` when the file cannot be read.
    """

    def __init__(
        self, files: Sequence[str], transform: Callable[[Image.Image], Tensor], max_pixels: Optional[int] = MAX_PIXELS
    ):
        self.items = [f if isinstance(f, (Image.Image, Tensor)) else str(f) for f in files]
        self.files = [f if isinstance(f, str) else None for f in self.items]
        self.transform, self.max_pixels = transform, max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tuple[Optional[Tensor], Dict[str, Any]]:
        path, item = self.files[index], self.items[index]
        try:
            rgb = load_rgb(item, self.max_pixels)
        except Exception as e:  # missing, truncated, not an image, too large: reported, and the others go on
            first = (str(e).splitlines() or [""])[0]
            return None, {"file": path, "index": index, "error": f"{type(e).__name__}: {first}"}
        image = self.transform(rgb)
        w, h = rgb.size
        info = {
            "file": path,
            "index": index,
            "width": w,
            "height": h,
            "orig_size": torch.tensor([h, w]),
            "size": torch.tensor(list(image.shape[-2:])),
        }
        return image, info


class SizeGroupedBatchSampler(Sampler[List[int]]):
    """Batches of images that share one (upright) file size, so no batch is ever padded.

    A DETR's outputs change with padding (its backbone sees the padded zeros, as in the official code); with
    equal sizes a deterministic transform gives equal tensor sizes, and an image's prediction does not depend
    on which other images are in the run. Batches come in order of each size's first image; unreadable files
    get a batch of their own.
    """

    def __init__(self, files: Sequence[str], batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.batches: List[List[int]] = []
        open_batch: Dict[Any, List[int]] = {}
        for i, f in enumerate(files):
            key = image_size(f) or ("unreadable", i)
            group = open_batch.setdefault(key, [])
            if not group:
                self.batches.append(group)
            group.append(i)
            if len(group) == batch_size:
                del open_batch[key]

    def __iter__(self) -> Iterator[List[int]]:
        return iter([list(b) for b in self.batches])

    def __len__(self) -> int:
        return len(self.batches)


def collate_images(
    batch: Sequence[Tuple[Optional[Tensor], Dict[str, Any]]],
) -> Tuple[Optional[Tensor], List[Dict[str, Any]]]:
    """``(images (B_ok, 3, H, W) or None, infos)``: the readable images stacked in order; ``infos`` lists every
    item, the unreadable ones (key ``"error"``) too, so ``[i for i in infos if "error" not in i]`` matches rows."""
    good = [im for im, _ in batch if im is not None]
    return (torch.stack(good) if good else None), [info for _, info in batch]


def collate_detection(
    batch: Sequence[Tuple[Optional[Tensor], Dict[str, Any]]],
) -> Tuple[Optional[Tensor], Optional[Tensor], List[Dict[str, Any]]]:
    """``(images (B_ok, 3, H, W), mask (B_ok, H, W) True on padding, infos)``: DETR's batch layout (zero padding at
    the bottom and right); ``(None, None, infos)`` when no file of the batch could be read."""
    good = [im for im, _ in batch if im is not None]
    images, mask = pad_images_to_batch(good) if good else (None, None)
    return images, mask, [info for _, info in batch]


def image_loader(
    files: Sequence[str],
    transform: Callable[[Image.Image], Tensor],
    batch_size: int,
    num_workers: int = 0,
    detection: bool = False,
    max_pixels: Optional[int] = MAX_PIXELS,
) -> DataLoader:
    """The predict loader: :class:`ImageFiles` in order; for ``detection`` batches of equal-size images
    (:class:`SizeGroupedBatchSampler`) in DETR's ``(images, mask, infos)`` layout, else ``(images, infos)``.
    Images over ``max_pixels`` are reported as unreadable (:class:`ImageTooLargeError`), never decoded."""
    data = ImageFiles(files, transform, max_pixels)
    common = dict(num_workers=num_workers, persistent_workers=False, pin_memory=torch.cuda.is_available())
    if detection:
        return DataLoader(
            data, batch_sampler=SizeGroupedBatchSampler(data.items, batch_size), collate_fn=collate_detection, **common
        )
    return DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_images, **common)


class PredictFolderMixin:
    """``predict_dataloader()`` over the datamodule's ``predict_root`` (a folder, file or glob) with its
    ``predict_transform()`` (:func:`image_loader`, as ``tools/predict.py``); a datamodule sets ``predict_root`` and
    ``num_workers`` and may override ``predict_batch_size`` and ``predict_detection``."""

    predict_detection = False
    predict_root: Optional[str] = None  # set by the datamodule's __init__
    trainer: Optional[pl.Trainer]  # LightningDataModule's: None until a Trainer uses the datamodule

    @property
    def predict_batch_size(self) -> int:
        return int(self.batch_size)

    def predict_transform(self) -> Callable[[Image.Image], Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no predict_transform()")

    def predict_dataloader(self) -> DataLoader:
        root = self.predict_root
        if not root:
            raise ValueError(
                f"{type(self).__name__}: predict needs images: pass --data.init_args.predict_root DIR "
                "(a folder, an image file or a glob); got predict_root=None"
            )
        return image_loader(
            find_images([root]),
            self.predict_transform(),
            self.predict_batch_size,
            self.num_workers,
            self.predict_detection,
        )

    def skip_prepare_for_predict(self) -> bool:
        """True while a Trainer predicts from ``predict_root``: the dataset's own files are then not needed."""
        return bool(self.predict_root) and self.trainer is not None and self.trainer.predicting
