"""timm's feature API for our models: ``create_model(name, features_only=True, out_indices=...)``.

The wrappers are timm's own, chosen as timm does for the same architectures: the ViTs go through
``FeatureGetterNet`` (their ``forward_intermediates``: patch tokens reshaped to ``(B, D, h, w)`` maps, prefix tokens
dropped, unused blocks pruned); a model with a ``feature_info`` list of stages (the ResNets: CNN, SASA, non-local)
through ``FeatureListNet``. Either returns a
list of ``(B, C_i, H_i, W_i)`` maps and carries ``.feature_info`` (``.channels()``, ``.reduction()``, and the
dicts ``num_chs`` / ``reduction`` / ``module``), so it plugs in wherever a timm backbone does.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from timm.models import FeatureListNet
from timm.models._features import FeatureGetterNet  # private: timm exports no public FeatureGetterNet (1.0.x)
from torch import nn

from ..layers import check_image_input
from .protocols import IntermediatesModel, conforms
from .vit import VisionTransformer

__all__ = ["feature_extractor", "has_feature_api", "FEATURE_CLASSES"]

OutIndices = Union[int, Sequence[int]]


def _feature_info(model: nn.Module) -> Optional[List[Dict[str, Any]]]:
    """timm's metadata of each feature map (``num_chs``, ``reduction``, ``module``), or None when ``model`` has none."""
    info = getattr(model, "feature_info", None)  # a plain read with a default: only backbones carry the list
    return list(info) if isinstance(info, (list, tuple)) else None


def has_feature_api(model: nn.Module) -> bool:
    """Whether ``model`` can serve as a backbone through :func:`feature_extractor`."""
    return _feature_info(model) is not None


FEATURE_CLASSES = ("getter", "list")


def _carry_cfg(net: nn.Module, model: nn.Module) -> None:
    """The wrapper carries the model's cfg as timm's do (``pretrained_cfg`` and its alias ``default_cfg``, one dict,
    without the classifier entries), so ``timm.data.resolve_data_config(model=net)`` gives the model's values."""
    cfg = getattr(model, "pretrained_cfg", None)  # a plain read with a default: create_model sets it
    if cfg is not None:
        cfg = {k: v for k, v in cfg.items() if k not in ("num_classes", "classifier", "global_pool")}
        # Plain (dict) attributes on timm's wrapper; torch's stub types Module attributes as Tensor | Module.
        net.pretrained_cfg = net.default_cfg = cfg  # type: ignore[assignment]


def _getter_indices(out_indices: OutIndices) -> Union[int, Tuple[int, ...]]:
    """Indices as timm's ``FeatureGetterNet`` types them (an int or a tuple)."""
    return out_indices if isinstance(out_indices, int) else tuple(out_indices)


def _list_net(model: nn.Module, name: str, info: List[Dict[str, Any]], out_indices: Optional[OutIndices]) -> nn.Module:
    """timm's ``FeatureListNet`` over the stages ``out_indices`` of ``info`` (an int n: the last n; default all)."""
    n = len(info)
    idx = n if out_indices is None else out_indices
    idx = tuple(range(-idx, 0)) if isinstance(idx, int) else tuple(idx)  # an int n: the last n, as timm
    if not idx or any(not -n <= i < n for i in idx):
        raise ValueError(
            f"features_only for {name!r}: out_indices={out_indices!r} is out of range; it has {n} feature maps "
            f"({', '.join(i['module'] for i in info)}), indices 0..{n - 1} or -{n}..-1"
        )
    return FeatureListNet(model, out_indices=tuple(i % n for i in idx))


def feature_extractor(
    model: nn.Module,
    name: str,
    out_indices: Optional[OutIndices] = None,
    norm: bool = False,
    feature_cls: Optional[str] = None,
) -> nn.Module:
    """Wrap ``model`` so its forward returns the feature maps ``out_indices`` as a list of ``(B, C_i, H_i, W_i)``.

    Args:
        model: a model built by ``create_model`` (its weights are kept and shared).
        name: its registry name (for error messages).
        out_indices: as timm: ViTs take block indices (an int n = the last n blocks; default 3), ResNets stage
            indices into ``[stem, layer1, ..., layer4]`` (default all five). Negative indices count from the end.
        norm: ViTs only: apply the final norm to every map (default: raw block outputs, as timm).
        feature_cls: ``"getter"`` (timm's ``FeatureGetterNet`` over the model's ``forward_intermediates``: the ViTs'
            default, and the ResNets' on request) or ``"list"`` (timm's ``FeatureListNet``: the ResNets' default).
    """
    if feature_cls not in (None,) + FEATURE_CLASSES:
        raise ValueError(f"features_only for {name!r}: feature_cls={feature_cls!r}; expected one of {FEATURE_CLASSES}")
    in_chans = getattr(model, "in_chans", None)  # a plain read with a default: the input check, when it is known
    info = _feature_info(model)
    getter = feature_cls == "getter" and conforms(model, IntermediatesModel)
    if feature_cls == "getter" and not getter:
        raise ValueError(
            f"features_only for {name!r}: feature_cls='getter' needs forward_intermediates, which "
            f"{type(model).__name__} has not"
        )
    if isinstance(model, VisionTransformer) and feature_cls == "list":
        raise ValueError(f"features_only for {name!r}: a ViT's features come through feature_cls='getter' only")
    net: nn.Module
    if isinstance(model, VisionTransformer):
        net = FeatureGetterNet(model, out_indices=_getter_indices(3 if out_indices is None else out_indices), norm=norm)
    elif getter and info is not None:
        idx = len(info) if out_indices is None else out_indices
        net = FeatureGetterNet(model, out_indices=_getter_indices(idx), norm=norm)
    elif info is not None:
        if norm:
            raise ValueError(
                f"features_only for {name!r}: norm=True applies to ViTs only (a ResNet stage has no final norm)"
            )
        net = _list_net(model, name, info, out_indices)
    else:
        raise ValueError(
            f"features_only: {name!r} has no feature maps (a ViT or a ResNet-style backbone has them; "
            f"{type(model).__name__} has no feature_info)"
        )
    _carry_cfg(net, model)
    if in_chans is not None:
        net.in_chans = in_chans
        # FeatureListNet rebuilds the trunk without the model's input check: put it back on the wrapper
        net.register_forward_pre_hook(lambda _m, args: check_image_input(args[0], in_chans, name))
    return net
