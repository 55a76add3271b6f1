"""The registry, at the bottom of ``models/``: names -> model factories, with timm's names, tags and listing rules.

``"<arch>"`` is an architecture (its default tag when ``pretrained=True``), ``"<arch>.<tag>"`` one of its published
weights (:mod:`vision_attn.models.pretrained_cfgs`). Building a model from a name is
:func:`vision_attn.models.builder.create_model`'s job; this module only registers, lists and resolves names.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple, Union

from torch import nn

from .pretrained_cfgs import PRETRAINED_CFGS, tags_of

__all__ = [
    "register_model",
    "model_entrypoint",
    "list_models",
    "list_modules",
    "is_model",
    "split_model_name",
    "has_weights",
    "unknown_model_error",
    "UnknownModelError",
]

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
_MODULE_OF: Dict[str, str] = {}  # arch -> the module that registered it ("vit", "cnn", ...), timm's `module` filter
Filters = Union[str, Iterable[str]]


class UnknownModelError(ValueError):
    """The model name (or its tag) is not registered."""


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model factory under its function name (its typed signature is what
    :func:`~vision_attn.models.builder.validate_model_args` checks options against)."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    _MODULE_OF[name] = fn.__module__.rsplit(".", 1)[-1]
    return fn


def split_model_name(name: str) -> Tuple[str, Optional[str]]:
    """``"vit_base_patch16_224.augreg_in21k"`` -> ``("vit_base_patch16_224", "augreg_in21k")``; no tag -> None."""
    arch, _, tag = name.partition(".")
    return arch, tag or None


def has_weights(cfg: Optional[Dict]) -> bool:
    """Whether a ``pretrained_cfg`` names a weights source (timm's ``PretrainedCfg.has_weights``)."""
    return bool(cfg and (cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")))


def _as_list(filters: Filters) -> List[str]:
    if not filters:
        return []
    return [filters] if isinstance(filters, str) else [str(f) for f in filters]


def _expand(pattern: str) -> List[str]:
    """timm's rule: a filter without a tag also matches every tag of the names it matches."""
    return [pattern] if "." in pattern else [pattern, pattern + ".*"]


def _natural_key(name: str) -> List[Union[int, str]]:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name.lower())]


def _candidates(modules: List[str], include_tags: bool) -> List[str]:
    """Every registered name (in ``modules`` when given), each architecture followed by its tags when asked,
    the default tag first (timm's order of ``pretrained_cfgs``)."""
    archs = [a for a in sorted(_MODELS, key=_natural_key) if not modules or _MODULE_OF[a] in modules]
    if not include_tags:
        return archs
    return [f"{a}.{t}" for a in archs for t in tags_of(a)] + [a for a in archs if not tags_of(a)]


def list_models(
    filter: Filters = "",
    module: Filters = "",
    pretrained: bool = False,
    exclude_filters: Filters = "",
    name_matches_cfg: bool = False,
    include_tags: Optional[bool] = None,
) -> List[str]:
    """Registered names, as timm's ``list_models`` (same arguments and meaning).

    Args:
        filter: shell-style pattern(s) (``"vit_*"``); a pattern without a ``.`` also matches the tags of its names.
        module: only the models of these modules of ``vision_attn.models`` (``"vit"``, ``"cnn"``, ``"detr"``, ...).
        pretrained: only names with published weights.
        exclude_filters: pattern(s) removed after ``filter``.
        name_matches_cfg: only names with a ``pretrained_cfg`` entry (we register no aliases).
        include_tags: ``"<arch>.<tag>"`` names instead of architectures; default: ``pretrained``.

    Sorted naturally by architecture; an architecture's tags in timm's order (the default tag first).
    """
    include_tags = pretrained if include_tags is None else include_tags
    names = _candidates(_as_list(module), include_tags)
    include = [p for f in _as_list(filter) for p in (_expand(f) if include_tags else [f])]
    exclude = [p for f in _as_list(exclude_filters) for p in (_expand(f) if include_tags else [f])]
    keep: Set[str] = set(names)
    if include:
        keep = {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in include)}
    keep -= {n for n in keep if any(fnmatch.fnmatchcase(n, p) for p in exclude)}
    if pretrained:
        keep = {n for n in keep if tags_of(split_model_name(n)[0])}
    if name_matches_cfg:
        keep = {n for n in keep if split_model_name(n)[0] in PRETRAINED_CFGS}
    return [n for n in names if n in keep]


def list_modules() -> List[str]:
    """The modules that register models (timm's ``list_modules``)."""
    return sorted(set(_MODULE_OF.values()))


def is_model(name: str) -> bool:
    """Whether ``name`` (``arch`` or ``arch.tag``) is registered."""
    arch, tag = split_model_name(name)
    return arch in _MODELS and (tag is None or tag in tags_of(arch))


def unknown_model_error(name: str) -> UnknownModelError:
    """The one-line error for an unregistered ``name``: its tags, or the closest names."""
    arch, tag = split_model_name(name)
    if arch in _MODELS:
        tags = tags_of(arch)
        known = f"its tags: {', '.join(tags)}" if tags else "it has no published weights"
        return UnknownModelError(f"model {arch!r} has no tag {tag!r}; {known}")
    close = difflib.get_close_matches(arch, list(_MODELS), n=5, cutoff=0.5)
    hint = (
        f"; did you mean {', '.join(close)}?" if close else f"; see vision_attn.list_models() ({len(_MODELS)} models)"
    )
    return UnknownModelError(f"unknown model {name!r}{hint}")


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The factory of ``name`` (``arch`` or ``arch.tag``); :class:`UnknownModelError` (one line) when unregistered."""
    if not is_model(name):
        raise unknown_model_error(name)
    return _MODELS[split_model_name(name)[0]]
