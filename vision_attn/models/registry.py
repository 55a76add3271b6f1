"""One registry: ``create_model(name)`` and ``list_models(pattern)``, with timm's names, tags and ``hf-hub:`` ids.

``"<arch>"`` is an architecture (its default tag when ``pretrained=True``), ``"<arch>.<tag>"`` one of its published
weights (:mod:`vision_attn.models.pretrained_cfgs`), ``"hf-hub:<org>/<repo>[@revision]"`` a Hub repo with our or
timm's ``config.json``. Every model made here carries ``pretrained_cfg`` (timm's form: the weights' source and the
preprocessing its eval transform uses) and ``model_args`` (what ``save_pretrained`` writes to rebuild it).
"""
from __future__ import annotations

import copy
import difflib
import fnmatch
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from torch import nn

from .checkpoint import Checkpoint, load_pretrained, num_classes_in, read_checkpoint
from .pretrained_cfgs import PRETRAINED_CFGS, default_pretrained_cfg, tags_of

__all__ = ["register_model", "create_model", "list_models", "is_model", "split_model_name", "UnknownModelError"]

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
_HF_HUB = "hf-hub:"


class UnknownModelError(ValueError):
    """The model name (or its tag) is not registered."""


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model factory under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def split_model_name(name: str) -> Tuple[str, Optional[str]]:
    """``"vit_base_patch16_224.augreg_in21k"`` -> ``("vit_base_patch16_224", "augreg_in21k")``; no tag -> None."""
    arch, _, tag = name.partition(".")
    return arch, tag or None


def _has_weights(cfg: Optional[Dict[str, Any]]) -> bool:
    return bool(cfg and (cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")))


def list_models(pattern: str = "*", pretrained: bool = False) -> List[str]:
    """Registered names matching a shell-style ``pattern`` (e.g. ``"vit_*"``), sorted.

    ``pretrained=True``: the ``"<arch>.<tag>"`` names that have published weights (as timm), each architecture's
    default tag first; a pattern without a ``.`` matches the architecture part.
    """
    if not pretrained:
        return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))
    out = []
    for arch in sorted(_MODELS):
        for tag in tags_of(arch):
            full = f"{arch}.{tag}"
            if fnmatch.fnmatchcase(full, pattern) or ("." not in pattern and fnmatch.fnmatchcase(arch, pattern)):
                out.append(full)
    return out


def is_model(name: str) -> bool:
    """Whether ``name`` (``arch`` or ``arch.tag``) is registered."""
    arch, tag = split_model_name(name)
    return arch in _MODELS and (tag is None or tag in tags_of(arch))


def _unknown(name: str) -> UnknownModelError:
    arch, tag = split_model_name(name)
    if arch in _MODELS:
        tags = tags_of(arch)
        known = f"its tags: {', '.join(tags)}" if tags else "it has no published weights"
        return UnknownModelError(f"model {arch!r} has no tag {tag!r}; {known}")
    close = difflib.get_close_matches(arch, list(_MODELS), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; see vision_attn.list_models() ({len(_MODELS)} models)"
    return UnknownModelError(f"unknown model {name!r}{hint}")


def _build(arch: str, num_classes: Optional[int], kwargs: Dict[str, Any]) -> nn.Module:
    args = dict(kwargs)
    if num_classes is not None:
        args["num_classes"] = num_classes
    try:
        model = _MODELS[arch](**args)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        raise TypeError(f"model {arch!r} takes no argument {str(e).rsplit(' ', 1)[-1]} ({e})") from None
    model.model_args = args  # what save_pretrained writes to rebuild it
    return model


def _input_size(model: nn.Module, arch: str, cfg: Optional[Dict[str, Any]]) -> Tuple[int, int, int]:
    """The model's own input size when it has one (a ViT's ``img_size``, a GAN's), else the cfg's or a default."""
    chans = int(getattr(model, "in_chans", 3) or 3)
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "img_size", None) if pe is not None else getattr(model, "img_size", None)
    if isinstance(size, int):
        size = (size, size)
    if size is None:
        size = tuple(cfg["input_size"][1:]) if cfg else ((32, 32) if "cifar" in arch else (224, 224))
    return (chans, int(size[0]), int(size[1]))


def _model_cfg(model: nn.Module, arch: str, cfg: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    n = getattr(model, "num_classes", None)
    size = _input_size(model, arch, cfg)
    out = dict(cfg) if cfg else default_pretrained_cfg(arch, n if n is not None else 0, size)
    out["architecture"] = arch
    out["input_size"] = size
    if n is not None and n != out.get("num_classes"):  # another head than the weights': their class names do not apply
        out.pop("label_names", None)
        out["label_names_source"] = None
        out["num_classes"] = n
    return out


def create_model(
    name: str,
    pretrained: Optional[Union[str, Path, bool, Checkpoint]] = None,
    num_classes: Optional[int] = None,
    *,
    checkpoint_path: Optional[Union[str, Path]] = None,
    pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    features_only: bool = False,
    out_indices=None,
    **kwargs,
) -> nn.Module:
    """Build a registered model, optionally loading weights.

    Args:
        name: ``"<arch>"``, ``"<arch>.<tag>"`` (:func:`list_models` with ``pretrained=True``) or
            ``"hf-hub:<org>/<repo>[@revision]"`` (a repo with our ``save_pretrained`` folder or timm's files).
        pretrained: ``True``: the tag's published weights (the default tag for a bare ``<arch>``), through the
            Hugging Face cache (``HF_HUB_OFFLINE`` respected) or, for DETR, the official URL; or a path / URL of a
            checkpoint: ours (state dict, Lightning ``.ckpt``: its EMA weights when present), timm / torchvision
            (``.pth``, ``.bin``, ``.safetensors``), official or Hugging Face DETR.
        num_classes: classifier outputs. Default: the checkpoint's (its ``num_classes`` entry, else its head's
            shape), else the tag's, else the factory's. A different explicit value re-initialises the head (warned).
        checkpoint_path: a checkpoint to start from, as timm's argument (like a path in ``pretrained``; with
            ``pretrained=True`` it is loaded after the published weights).
        pretrained_cfg_overlay: entries that replace the tag's ``pretrained_cfg`` (e.g. ``{"file": PATH}``).
        cache_dir: another Hugging Face / torch.hub cache folder for the downloads.
        features_only: return timm's feature extractor instead: ``forward`` gives a list of ``(B, C_i, H_i, W_i)``
            maps, ``.feature_info`` their channels and strides (see :func:`vision_attn.models.features.feature_extractor`).
        out_indices: with ``features_only``: which maps (ViT blocks, or ResNet ``[stem, layer1..4]``; timm's meaning).
        **kwargs: architecture options of the factory (``img_size``, ``drop_path_rate``, ...).
    """
    if name.startswith(_HF_HUB):
        if pretrained not in (None, True, False) or checkpoint_path is not None:
            raise ValueError(f"{name}: an hf-hub: name takes pretrained=True/False; its weights are the repo's")
        from .hub import from_pretrained

        return from_pretrained(name, pretrained=bool(pretrained), num_classes=num_classes, cache_dir=cache_dir, **kwargs)
    if checkpoint_path is not None and not pretrained:  # timm's spelling of a file to start from
        pretrained, checkpoint_path = checkpoint_path, None
    arch, tag = split_model_name(name)
    if arch not in _MODELS or (tag is not None and tag not in tags_of(arch)):
        raise _unknown(name)
    if out_indices is not None and not features_only:
        raise ValueError(f"create_model({name!r}): out_indices={out_indices!r} needs features_only=True")
    tags = tags_of(arch)
    cfg = None
    if tags:
        cfg = copy.deepcopy(PRETRAINED_CFGS[arch][tag or tags[0]])
        cfg.update(architecture=arch, tag=tag or tags[0])
    if pretrained_cfg_overlay:
        cfg = {**(cfg or {}), **pretrained_cfg_overlay}
    ck: Optional[Checkpoint] = None
    if pretrained is True:
        if not _has_weights(cfg):
            raise ValueError(f"model {arch!r} has no default pretrained weights; pass pretrained=PATH_OR_URL of a "
                             "checkpoint (vision_attn.list_models(pretrained=True) lists the names with weights)")
        from .hub import fetch_pretrained

        ck = read_checkpoint(fetch_pretrained(cfg, cache_dir))
    elif pretrained:
        ck = read_checkpoint(pretrained)
    explicit = num_classes is not None
    if not explicit and ck is not None and ck.num_classes is not None:
        num_classes = ck.num_classes
    elif not explicit and _has_weights(cfg) and (tag is not None or pretrained is True):
        num_classes = cfg["num_classes"]
    model = _build(arch, num_classes, kwargs)
    if ck is not None and not explicit and ck.num_classes is None:
        found = num_classes_in(model, ck.state_dict)  # a file without num_classes: its head's shape decides
        if found is not None and found != getattr(model, "num_classes", found):
            model = _build(arch, found, kwargs)
    model.pretrained_cfg = _model_cfg(model, arch, cfg)
    if ck is not None:
        load_pretrained(model, ck)
        if pretrained is not True:  # the weights are that file's, not the tag's
            for k in ("hf_hub_id", "url"):
                model.pretrained_cfg.pop(k, None)
            model.pretrained_cfg.update(file=str(ck.path), source="file")
        if ck.class_names and len(ck.class_names) == getattr(model, "num_classes", None):
            model.pretrained_cfg["label_names"] = list(ck.class_names)
    if checkpoint_path is not None:
        load_pretrained(model, checkpoint_path)
    if features_only:
        from .features import feature_extractor

        model = feature_extractor(model, arch, out_indices)
    return model
