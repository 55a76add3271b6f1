"""One registry: ``create_model(name)`` and ``list_models(pattern)``, with timm's names where the architecture is timm's."""
from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Dict, List, Optional, Union
from pathlib import Path

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "is_model", "UnknownModelError"]

_MODELS: Dict[str, Callable[..., nn.Module]] = {}


class UnknownModelError(ValueError):
    """The model name is not registered."""


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model factory under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> List[str]:
    """Registered names matching a shell-style ``pattern`` (e.g. ``"vit_*"``), sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def is_model(name: str) -> bool:
    return name in _MODELS


def create_model(
    name: str,
    pretrained: Optional[Union[str, Path, bool]] = None,
    num_classes: Optional[int] = None,
    features_only: bool = False,
    out_indices=None,
    **kwargs,
) -> nn.Module:
    """Build a registered model, optionally loading weights.

    Args:
        name: a name from :func:`list_models`.
        pretrained: path or URL of a checkpoint: ours (state dict or Lightning ``.ckpt``) or a timm /
            torchvision state dict (``.pth``, ``.bin``, ``.safetensors``), or an official DETR checkpoint; ``True``:
            the model's published weights (its ``pretrained_url``; DETR's official ones). Positions are resampled when
            ``img_size`` differs; the head is re-initialised (with a warning) when ``num_classes`` differs.
        num_classes: classifier outputs (default: the factory's).
        features_only: return timm's feature extractor instead: ``forward`` gives a list of ``(B, C_i, H_i, W_i)``
            maps, ``.feature_info`` their channels and strides (see :func:`vision_attn.models.features.feature_extractor`).
        out_indices: with ``features_only``: which maps (ViT blocks, or ResNet ``[stem, layer1..4]``; timm's meaning).
        **kwargs: architecture options of the factory (``img_size``, ``drop_path_rate``, ...).
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; see vision_attn.list_models() ({len(_MODELS)} models)"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    fn = _MODELS[name]
    if out_indices is not None and not features_only:
        raise ValueError(f"create_model({name!r}): out_indices={out_indices!r} needs features_only=True")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        model = fn(**kwargs)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        raise TypeError(f"model {name!r} takes no argument {str(e).rsplit(' ', 1)[-1]} ({e})") from None
    if pretrained is True:  # the model's published weights (e.g. the official DETR checkpoints)
        url = getattr(model, "pretrained_url", None)
        if not url:
            raise ValueError(
                f"model {name!r} has no default pretrained weights; pass pretrained=PATH_OR_URL of a checkpoint"
            )
        pretrained = url
    if pretrained:
        from .checkpoint import load_pretrained

        load_pretrained(model, pretrained)
    if features_only:
        from .features import feature_extractor

        model = feature_extractor(model, name, out_indices)
    return model
