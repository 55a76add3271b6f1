"""Reading a COCO instances JSON and checking its format, record by record.

Every error names the file, the list and index of the first bad record, what was expected and (the start of) what
was found, so a broken annotation file is fixed in one look.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict

__all__ = ["COCOFormatError", "load_coco_annotations"]


class COCOFormatError(ValueError):
    """An annotation file that is not valid COCO instances JSON; the message names the file and the record."""


def _is_number(x: Any) -> bool:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # a JSON integer like 10**400 is an exact Python int no float can hold
        return False


def _read_instances_json(path: Path) -> Dict[str, Any]:
    """The JSON object of ``path`` with list-valued ``images``, ``annotations`` and ``categories``."""
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {path} not found")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:  # ValueError: JSONDecodeError, or an int of > 4300 digits
        raise COCOFormatError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise COCOFormatError(
            f"{path}: expected a JSON object with 'images', 'annotations', 'categories'; got {type(data).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise COCOFormatError(f"{path}: missing or non-list top-level key {key!r} (COCO instances format expected)")
    return data


def load_coco_annotations(path: str | os.PathLike) -> Dict[str, Any]:
    """Read and check a COCO instances file; return ``{"images", "annotations", "categories"}``.

    Raises:
        FileNotFoundError: the file does not exist.
        COCOFormatError: not JSON, a missing top-level key, or the first record that is malformed (named by its
            list and index): images need ``id, file_name, width, height``; categories ``id, name``; annotations
            ``image_id`` of a listed image, ``category_id`` of a listed category and ``bbox`` = 4 finite numbers
            ``[x, y, w, h]`` with ``w, h >= 0``.
    """
    path = Path(path)
    data = _read_instances_json(path)

    def bad(kind: str, i: int, rec: Any, why: str) -> COCOFormatError:
        text = json.dumps(rec)[:200] if not isinstance(rec, str) else rec
        return COCOFormatError(f"{path}: {kind}[{i}] {why}: {text}")

    image_ids: Dict[Any, int] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not all(k in im for k in ("id", "file_name", "width", "height")):
            raise bad("images", i, im, "needs keys id, file_name, width, height")
        if not (_is_number(im["width"]) and _is_number(im["height"]) and im["width"] > 0 and im["height"] > 0):
            raise bad("images", i, im, "width and height must be positive numbers")
        if im["id"] in image_ids:
            raise bad(
                "images",
                i,
                im,
                f"id {im['id']!r} is used twice (also images[{image_ids[im['id']]}]); ids must be unique",
            )
        image_ids[im["id"]] = i
    cat_ids: Dict[int, int] = {}
    for i, c in enumerate(data["categories"]):
        if (
            not isinstance(c, dict)
            or not isinstance(c.get("id"), int)
            or isinstance(c.get("id"), bool)
            or c["id"] < 0
            or "name" not in c
        ):
            raise bad("categories", i, c, "needs an int id >= 0 and a name")
        if c["id"] in cat_ids:
            raise bad(
                "categories",
                i,
                c,
                f"id {c['id']} is used twice (also categories[{cat_ids[c['id']]}]); ids must be unique",
            )
        cat_ids[c["id"]] = i
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or not all(k in a for k in ("image_id", "category_id", "bbox")):
            raise bad("annotations", i, a, "needs keys image_id, category_id, bbox")
        box = a["bbox"]
        if (
            not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box))
            or box[2] < 0
            or box[3] < 0
        ):
            raise bad("annotations", i, a, "bbox must be 4 finite numbers [x, y, w, h] with w, h >= 0")
        if a["image_id"] not in image_ids:
            raise bad("annotations", i, a, f"image_id {a['image_id']!r} is not in 'images'")
        if a["category_id"] not in cat_ids:
            raise bad("annotations", i, a, f"category_id {a['category_id']!r} is not in 'categories'")
    return data
