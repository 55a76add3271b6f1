"""A model's preprocessing and class names, from its ``pretrained_cfg``: what predict and eval feed it.

:func:`resolve_data_config` is timm's, fed by the model's ``pretrained_cfg`` (so timm weights get timm's resize,
crop, interpolation and statistics); :func:`create_eval_transform` is timm's eval transform for classifiers and
DETR's short-side resize for detectors. :func:`class_names` reads the names the weights came with.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from PIL import Image
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from .pretrained_cfgs import default_pretrained_cfg

__all__ = ["resolve_data_config", "create_eval_transform", "class_names"]

_DETECTION_KEYS = ("short_side", "max_size")


def _cfg(model: nn.Module) -> Dict[str, Any]:
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg:
        return cfg
    # a model built without create_model: the defaults of its size
    size = getattr(getattr(model, "patch_embed", None), "img_size", None) or getattr(model, "img_size", None) or 224
    size = (size, size) if isinstance(size, int) else tuple(size)
    return default_pretrained_cfg(type(model).__name__, int(getattr(model, "num_classes", 0) or 0), (3, *size))


def resolve_data_config(model: nn.Module, use_test_size: bool = False, **overrides) -> Dict[str, Any]:
    """The eval preprocessing of ``model``: ``input_size (C, H, W)``, ``interpolation``, ``mean``, ``std``,
    ``crop_pct``, ``crop_mode`` (timm's :func:`timm.data.resolve_data_config` of its ``pretrained_cfg``), plus
    ``short_side`` and ``max_size`` for a detector. ``overrides`` replace entries (timm's ``args``)."""
    from timm.data import resolve_data_config as timm_resolve

    cfg = _cfg(model)
    out = timm_resolve(args=dict(overrides), pretrained_cfg=cfg, use_test_size=use_test_size)
    for k in _DETECTION_KEYS:
        if k in overrides or k in cfg:
            out[k] = overrides.get(k, cfg.get(k))
    if out.get("short_side"):
        out["crop_mode"] = "short_side"
    return out


class ToRGB:
    """PIL image of any mode (grayscale, RGBA, palette, 16-bit) -> RGB; the models take 3 channels."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == "RGB" else img.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


class ResizeShortSide:
    """DETR's evaluation resize: short side to ``size`` unless the long side would pass ``max_size``."""

    def __init__(self, size: int, max_size: Optional[int], interpolation: str = "bilinear") -> None:
        self.size, self.max_size = int(size), max_size
        self.interpolation = T.InterpolationMode(interpolation)

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        size = self.size
        if self.max_size is not None and max(h, w) / min(h, w) * size > self.max_size:
            size = int(round(self.max_size * min(h, w) / max(h, w)))  # DETR's get_size
        if min(h, w) == size:
            return img
        oh, ow = (int(size * h / w), size) if w < h else (size, int(size * w / h))
        return TF.resize(img, [oh, ow], interpolation=self.interpolation)

    def __repr__(self) -> str:
        return f"ResizeShortSide(size={self.size}, max_size={self.max_size})"


def create_eval_transform(model: nn.Module, **overrides) -> T.Compose:
    """``PIL image -> (3, H, W)`` float tensor, as ``model`` expects it at evaluation.

    Classifiers: timm's eval transform of :func:`resolve_data_config` (resize to ``H / crop_pct``, center crop,
    normalise). Detectors (``short_side`` in the cfg): DETR's short-side resize (long side at most ``max_size``),
    no crop, normalise. Any image mode is converted to RGB first.
    """
    cfg = resolve_data_config(model, **overrides)
    if cfg.get("crop_mode") == "short_side":
        return T.Compose(
            [
                ToRGB(),
                ResizeShortSide(cfg["short_side"], cfg.get("max_size"), cfg["interpolation"]),
                T.ToTensor(),
                T.Normalize(cfg["mean"], cfg["std"]),
            ]
        )
    from timm.data import create_transform

    tf = create_transform(**{k: v for k, v in cfg.items() if k not in _DETECTION_KEYS}, is_training=False)
    return T.Compose([ToRGB(), *tf.transforms])


def class_names(model: nn.Module) -> Optional[List[str]]:
    """The names of ``model``'s classes, index = class id: those its checkpoint or config carried
    (``pretrained_cfg["label_names"]``), ImageNet's (timm's ``ImageNetInfo`` descriptions) for ImageNet heads, or
    None when unknown (e.g. a new, re-initialised head)."""
    cfg = _cfg(model)
    n = getattr(model, "num_classes", cfg.get("num_classes"))
    names = cfg.get("label_names")
    if names and (n is None or len(names) == n):
        return [str(x) for x in names]
    subset = cfg.get("label_names_source")
    if subset and str(subset).startswith("imagenet"):
        from timm.data import ImageNetInfo

        try:
            info = ImageNetInfo(subset)
        except AssertionError:  # a subset timm does not ship names for
            return None
        descriptions = info.label_descriptions()
        return list(descriptions) if n is None or len(descriptions) == n else None
    return None
