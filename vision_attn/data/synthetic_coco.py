"""A built-in, offline detection task: light shapes on a dark noisy background, written in COCO's format.

Each image (random size between ``0.75 * img_size`` and ``img_size`` per side) holds 0 to ``max_objects``
shapes from the first ``num_classes`` of :data:`DETECTION_CLASSES` (the silhouettes of
:mod:`vision_attn.data.synthetic`, most distinct first), drawn with that module's signed distances and colours, with little overlap. A box is the tight box of the drawn pixels.
About 3% of the objects are marked ``iscrowd`` (excluded from training, ignored by COCO evaluation) and some
images have no object. Category ids are 1, 3, 5, ... on purpose, like COCO's gaps, so the id <-> label
mapping is always exercised.

Layout (what :class:`vision_attn.data.COCODataModule` reads)::

    root/shapes-coco-v2-128px-n2000-v200-c4-o4-s0/
        train/000000000001.png ...      val/...
        annotations/instances_train.json   annotations/instances_val.json

The same arguments give byte-identical files (numpy's ``default_rng(seed)``, PNG, sorted JSON).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from PIL import Image

from .synthetic_render import _blend, _contrasting_colors, _segment_alpha, _shape_distance

__all__ = ["generate_coco_shapes", "coco_shapes_folder_name", "COCO_SHAPES_SPLITS", "DETECTION_CLASSES"]

# Bump whenever the rendering changes: the folder name carries it, so stale data is never reused.
GENERATOR_VERSION = 2
COCO_SHAPES_SPLITS = ("train", "val")
# Category order: the most dissimilar silhouettes first, so a few classes are told apart by shape, not by a detail
# (circle vs ring, square vs square_frame differ only by a hole).
DETECTION_CLASSES = (
    "circle",
    "triangle",
    "plus",
    "square_frame",
    "ring",
    "diamond",
    "square",
    "x_cross",
    "horizontal_bar",
    "vertical_bar",
)
_CROWD_RATE = 0.03
_MAX_IOU = 0.1  # placement rejects a shape whose box overlaps an earlier one more than this


def coco_shapes_folder_name(
    num_train: int, num_val: int, img_size: int, num_classes: int, max_objects: int, seed: int
) -> str:
    """The folder (under ``root``) that :func:`generate_coco_shapes` writes for these arguments."""
    return (
        f"shapes-coco-v{GENERATOR_VERSION}-{img_size}px-n{num_train}-v{num_val}-c{num_classes}-o{max_objects}-s{seed}"
    )


def _check_args(num_train: int, num_val: int, img_size: int, num_classes: int, max_objects: int, seed: int) -> None:
    if img_size < 32:
        raise ValueError(f"img_size must be >= 32; got {img_size}")
    if not 1 <= num_classes <= len(DETECTION_CLASSES):
        raise ValueError(f"num_classes must be in [1, {len(DETECTION_CLASSES)}]; got {num_classes}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1; got {max_objects}")
    if num_train < 1 or num_val < 1:
        raise ValueError(f"need num_train >= 1 and num_val >= 1; got {num_train}, {num_val}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _render_image(rng: np.random.Generator, height: int, width: int, num_classes: int, max_objects: int):
    """One HWC uint8 image and its objects ``[(label, [x, y, w, h], area), ...]``."""
    f32 = np.float32
    px = min(height, width) / 32.0
    xs = (np.arange(width, dtype=f32) + 0.5)[None, None, :]
    ys = (np.arange(height, dtype=f32) + 0.5)[None, :, None]
    base = 0.4 * rng.random((1, 3), dtype=f32)
    slope = (rng.random(2, dtype=f32) - 0.5) * 0.6 / max(height, width)
    img = (rng.random((1, 3, height, width), dtype=f32) - 0.5) * 0.15 + base[:, :, None, None]
    img += (slope[0] * (xs - width / 2) + slope[1] * (ys - height / 2))[:, None]
    # one clutter line behind the shapes
    a = rng.random((1, 2), dtype=f32) * [width, height]
    b = rng.random((1, 2), dtype=f32) * [width, height]
    img = _blend(img, _segment_alpha(xs, ys, a, b, np.array([0.5 * px], f32)) * f32(0.6), rng.random((1, 3), dtype=f32))

    count = int(rng.integers(0, max_objects + 1))
    objects, boxes = [], []
    for _ in range(count):
        for _attempt in range(20):
            s = f32(rng.uniform(0.12, 0.25) * min(height, width))  # half-extent in pixels
            cx, cy = f32(rng.uniform(s, width - s)), f32(rng.uniform(s, height - s))
            box = np.array([cx - 1.2 * s, cy - 1.2 * s, cx + 1.2 * s, cy + 1.2 * s])
            if all(_iou(box, other) <= _MAX_IOU for other in boxes):
                break
        else:
            continue
        label = int(rng.integers(0, num_classes))
        tan_half = f32(rng.uniform(-0.1317, 0.1317))
        cos, sin = (1 - tan_half**2) / (1 + tan_half**2), 2 * tan_half / (1 + tan_half**2)
        k = np.full((1, 1, 1), rng.uniform(0.8, 1.25), f32)
        dx, dy = xs - cx, ys - cy
        u, v = (dx * cos + dy * sin) / s, (dy * cos - dx * sin) / s
        alpha = np.clip(0.5 - _shape_distance(DETECTION_CLASSES[label], u, v, k) * s, 0.0, 1.0)  # (1, H, W)
        img = _blend(img, alpha, _contrasting_colors(rng, base))
        on = alpha[0] >= 0.5
        if not on.any():
            continue
        rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
        x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
        boxes.append(box)
        objects.append((label, [x0, y0, x1 - x0, y1 - y0], int(on.sum())))
    img += (rng.random(img.shape, dtype=f32) - 0.5) * 0.1
    img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return img[0].transpose(1, 2, 0), objects


def _write_split(
    folder: Path, split: str, num: int, img_size: int, num_classes: int, max_objects: int, rng, first_id: int
) -> Dict[str, Any]:
    (folder / split).mkdir(parents=True)
    images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    for i in range(num):
        image_id = first_id + i
        h, w = (int(v) for v in rng.integers(int(0.75 * img_size), img_size + 1, size=2))
        img, objects = _render_image(rng, h, w, num_classes, max_objects)
        name = f"{image_id:012d}.png"
        Image.fromarray(img).save(folder / split / name, optimize=False)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        for label, (x, y, bw, bh), area in objects:
            crowd = int(rng.random() < _CROWD_RATE)
            annotations.append(
                {
                    "id": 10 * image_id + len([a for a in annotations if a["image_id"] == image_id]) + 1,
                    "image_id": image_id,
                    "category_id": 2 * label + 1,  # 1, 3, 5, ...: non-contiguous on purpose
                    "bbox": [x, y, bw, bh],
                    "area": area,
                    "iscrowd": crowd,
                    "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]],
                }
            )
    categories = [{"id": 2 * c + 1, "name": DETECTION_CLASSES[c], "supercategory": "shape"} for c in range(num_classes)]
    return {
        "info": {"description": f"synthetic shapes ({split})", "version": str(GENERATOR_VERSION)},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def generate_coco_shapes(
    root: str | os.PathLike = "data",
    num_train: int = 2000,
    num_val: int = 200,
    img_size: int = 128,
    num_classes: int = 4,
    max_objects: int = 4,
    seed: int = 0,
) -> Path:
    """Render the detection shapes once, in COCO's layout; return the folder (see the module docstring).

    Does nothing if the folder exists. Built under a temporary name and renamed into place, so concurrent
    processes (DDP) never see a half-written dataset. Train and val come from independent streams of ``seed``.
    """
    _check_args(num_train, num_val, img_size, num_classes, max_objects, seed)
    root = Path(root)
    final = root / coco_shapes_folder_name(num_train, num_val, img_size, num_classes, max_objects, seed)
    if final.exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        streams = np.random.SeedSequence(seed).spawn(len(COCO_SHAPES_SPLITS))
        (tmp / "annotations").mkdir()
        # ids: train 1.., val after; distinct across splits like COCO's
        first_ids = {"train": 1, "val": num_train + 1}
        counts = {"train": num_train, "val": num_val}
        for split, stream in zip(COCO_SHAPES_SPLITS, streams):
            ann = _write_split(
                tmp,
                split,
                counts[split],
                img_size,
                num_classes,
                max_objects,
                np.random.default_rng(stream),
                first_ids[split],
            )
            (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(ann, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
