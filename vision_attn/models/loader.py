"""Fitting read weights into a built model: the foreign key map, then timm's head and first-conv adaptation.

The order is timm's ``load_pretrained``: the model's ``checkpoint_filter_fn`` maps foreign keys (and resamples
positions); the first convolution is adapted to the model's input channels (:func:`adapt_input_conv`); a classifier
the model does not have (``num_classes=0``) or of another size is dropped (the model's head keeps its
initialisation); everything else must fit exactly.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union, cast

from torch import Tensor, nn

from .checkpoint import Checkpoint, read_checkpoint
from .errors import CheckpointError
from .protocols import ClassifierModel, CountsClassesInStateDict, FiltersCheckpoints, ResettableClassifier, conforms

__all__ = [
    "adapt_input_conv",
    "load_pretrained",
    "fit_state_dict",
    "num_classes_in",
    "classifier_names",
    "first_conv_names",
]

log = logging.getLogger(__name__)


def adapt_input_conv(in_chans: int, weight: Tensor, base_chans: Optional[int] = None) -> Tensor:
    """A first-conv ``weight (O, I, kh, kw)`` trained on ``base_chans`` input channels (default ``I``), for
    ``in_chans`` channels: timm's rule. One channel: the sum over the input channels (a gray image as R = G = B gives
    the same response); otherwise the channels repeated cyclically up to ``in_chans``, scaled by
    ``base_chans / in_chans`` (the response to a constant image keeps its size). Returns ``(O, in_chans, kh, kw)``."""
    if weight.ndim != 4:
        raise ValueError(f"adapt_input_conv: expected a conv weight (O, I, kh, kw); got shape {tuple(weight.shape)}")
    base = weight.shape[1] if base_chans is None else base_chans
    if in_chans < 1 or base != weight.shape[1]:
        raise ValueError(
            f"adapt_input_conv: cannot adapt a {weight.shape[1]}-channel weight declared as {base} "
            f"channels to {in_chans} channels"
        )
    if in_chans == base:
        return weight
    w = weight.float()  # half weights: sum in float
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, math.ceil(in_chans / base), 1, 1)[:, :in_chans] * (base / in_chans)
    return w.to(weight.dtype)


def _names(value: Any) -> List[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _classifier_prefix(model: nn.Module) -> Optional[str]:
    head = cast(ClassifierModel, model).get_classifier() if conforms(model, ClassifierModel) else None
    if head is None:
        return None
    for name, m in model.named_modules():
        if m is head:
            return name
    return None


def classifier_names(model: nn.Module) -> List[str]:
    """The module names of ``model``'s classifier: its ``get_classifier()``'s, and its cfg's ``classifier`` (timm's)."""
    own = _classifier_prefix(model)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return list(dict.fromkeys(([own] if own else []) + _names(cfg.get("classifier"))))


def first_conv_names(model: nn.Module) -> List[str]:
    """The module names of ``model``'s input convolutions (its cfg's ``first_conv``, timm's)."""
    return _names((getattr(model, "pretrained_cfg", None) or {}).get("first_conv"))


def _mapped(model: nn.Module, sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    return (
        cast(FiltersCheckpoints, model).checkpoint_filter_fn(dict(sd))
        if conforms(model, FiltersCheckpoints)
        else dict(sd)
    )


def num_classes_in(model: nn.Module, state_dict: Dict[str, Tensor]) -> Optional[int]:
    """The class count of the head a (foreign or own) state dict holds, for ``model``'s architecture; None if unknown.

    The model's own ``num_classes_in_state_dict`` decides when it has one (SA-GAN's class embeddings); otherwise the
    classifier (``get_classifier()``) rows, less the model's extra outputs (DETR's "no object"); 0 for a file without
    the classifier when the model can drop its head (``reset_classifier``: DINO / MAE / headless timm files).
    """
    if conforms(model, CountsClassesInStateDict):
        return cast(CountsClassesInStateDict, model).num_classes_in_state_dict(state_dict)
    head = _classifier_prefix(model)  # None unless a ClassifierModel (so it has num_classes)
    if head is None:
        return None
    n_model = cast(ClassifierModel, model).num_classes
    sd = _mapped(model, state_dict)
    weight = sd.get(head + ".weight")
    own = model.state_dict().get(head + ".weight")
    if weight is None:
        has_head = any(k.startswith(head + ".") for k in sd)
        return 0 if not has_head and conforms(model, ResettableClassifier) else None  # it can drop its head
    extra = own.shape[0] - n_model if own is not None else 0
    return int(weight.shape[0]) - extra


def _adapt_first_convs(model: nn.Module, sd: Dict[str, Tensor], own: Mapping[str, Tensor], where: str) -> None:
    """Adapt, in ``sd``, each first conv whose input channels differ from the model's (timm's ``in_chans`` rule)."""
    for name in first_conv_names(model):
        key = name + ".weight"
        if key not in sd or key not in own or sd[key].ndim != 4 or sd[key].shape[1] == own[key].shape[1]:
            continue
        log.info("%s: %s adapted from %d to %d input channels", where, key, sd[key].shape[1], own[key].shape[1])
        sd[key] = adapt_input_conv(own[key].shape[1], sd[key])


def _drop_other_heads(model: nn.Module, sd: Dict[str, Tensor], own: Dict[str, Tensor], where: str) -> None:
    """Drop, from ``sd`` (and ``own``), a classifier the model does not have or of another size; warn when the
    model's head then keeps its initialisation."""
    for head in classifier_names(model):
        theirs = [k for k in sd if k.startswith(head + ".")]
        mine = [k for k in own if k.startswith(head + ".")]
        if not mine:  # a headless model (num_classes=0): the file's classifier has no place, as timm drops it
            if theirs:
                log.info("%s: classifier %r dropped (the model has no head)", where, head)
            for k in theirs:
                sd.pop(k)
            continue
        wrong = [k for k in mine if k in sd and sd[k].shape != own[k].shape]
        if wrong:
            log.warning(
                "%s: classifier %r has %s outputs in the checkpoint, %s in the model; re-initialising it",
                where,
                head,
                tuple(sd[wrong[0]].shape)[0],
                tuple(own[wrong[0]].shape)[0],
            )
        elif not any(k in sd for k in mine):
            log.warning("%s: has no classifier %r; it keeps its initialisation", where, head)
        if wrong or not any(k in sd for k in mine):
            for k in theirs:
                sd.pop(k)
            for k in mine:
                own.pop(k, None)


def fit_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], where: str = "checkpoint", strict: bool = True
) -> Dict[str, Tensor]:
    """``state_dict`` mapped and adapted to ``model`` (see the module docstring); raises :class:`CheckpointError`
    (one line: ``where``, the keys and shapes) for anything that still does not fit."""
    sd = _mapped(model, state_dict)
    own = dict(model.state_dict())
    _adapt_first_convs(model, sd, own, where)
    _drop_other_heads(model, sd, own, where)
    wrong = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(
            f"{where}: {len(wrong)} tensor(s) do not fit {type(model).__name__}: " + "; ".join(wrong[:5])
        )
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{where}: does not match {type(model).__name__}: missing {len(missing)} key(s) {missing[:5]}, "
            f"unexpected {len(unexpected)} key(s) {unexpected[:5]}"
        )
    return sd


def load_pretrained(model: nn.Module, source: Union[str, Path, Checkpoint], strict: bool = True) -> nn.Module:
    """Load weights from ``source`` (a path, URL or :class:`Checkpoint`) into ``model``, adapting foreign layouts.

    The model's ``checkpoint_filter_fn(state_dict)`` (when it has one) maps foreign keys and resamples positions; a
    first conv of other input channels is adapted (:func:`adapt_input_conv`); a classifier of another size (or
    absent from the file, or absent from the model) is left out with a warning; any other mismatch is an error
    naming the key and both shapes.
    """
    ck = read_checkpoint(source)
    sd = fit_state_dict(model, ck.state_dict, str(ck.path), strict)
    model.load_state_dict(sd, strict=False)
    return model
