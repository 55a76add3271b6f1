"""What the floors above rely on from a model, declared as ``typing.Protocol``\\ s (checked with ``isinstance``).

A model is a plain ``nn.Module``; these are the optional members other code uses when a model has them:

* :class:`ClassifierModel`: a class head timm's way (``num_classes``, ``get_classifier()``); a
  :class:`ResettableClassifier` can also replace or drop it (``reset_classifier()``);
* :class:`FeatureHeadModel`: timm's ``forward_features`` / ``forward_head`` split (features for FID, pre-logits);
* :class:`IntermediatesModel`: timm's ``forward_intermediates`` (what ``features_only``'s getter wrapper calls);
* :class:`FiltersCheckpoints`: ``checkpoint_filter_fn(state_dict)`` maps foreign checkpoints onto the model;
* :class:`CountsClassesInStateDict`: ``num_classes_in_state_dict(state_dict)`` when the head alone cannot tell;
* :class:`OfflineRebuildable`: ``offline_model_args(args)``: arguments that rebuild it without downloads;
* :class:`DecaySkipping`: ``no_weight_decay()``: parameter names AdamW must not decay;
* :class:`PretrainedConfigured`: ``pretrained_cfg``: what ``create_model`` records (architecture, preprocessing, ...);
* :class:`GanModel`: a generator / discriminator pair with an EMA sampler, as ``SAGAN`` (what ``GenerationTask`` trains).

:func:`check_protocol` is the check where an object enters: one line naming it and the members it lacks;
:func:`conforms` asks without raising. Both look members up statically (no property runs).
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Generic, Iterable, List, Optional, Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = [
    "ClassifierModel",
    "CountsClassesInStateDict",
    "DecaySkipping",
    "FeatureHeadModel",
    "FiltersCheckpoints",
    "GanModel",
    "IntermediatesModel",
    "OfflineRebuildable",
    "PretrainedConfigured",
    "ResettableClassifier",
    "check_protocol",
    "conforms",
    "missing_members",
]


@runtime_checkable
class ClassifierModel(Protocol):
    """A model with a class head, as timm's: ``num_classes`` outputs from ``get_classifier()``."""

    num_classes: int

    def get_classifier(self) -> nn.Module: ...


@runtime_checkable
class ResettableClassifier(ClassifierModel, Protocol):
    """A classifier whose head can be replaced or dropped: ``reset_classifier(num_classes)`` (0: no head)."""

    def reset_classifier(self, num_classes: int, *args: Any, **kwargs: Any) -> None: ...


@runtime_checkable
class FeatureHeadModel(Protocol):
    """timm's split: ``forward_features(x)`` then ``forward_head(h, pre_logits=...)``."""

    def forward_features(self, x: Tensor) -> Tensor: ...

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor: ...


@runtime_checkable
class IntermediatesModel(Protocol):
    """timm's feature API: ``forward_intermediates(x, indices, ...)`` gives the outputs of chosen blocks (timm's
    ``FeatureGetterNet`` calls it with ``indices``, ``norm``, ``output_fmt``, ``intermediates_only``)."""

    def forward_intermediates(self, x: Tensor, indices: Any = None, **kwargs: Any) -> Any: ...


@runtime_checkable
class FiltersCheckpoints(Protocol):
    """Maps a foreign (or own) state dict onto the model, asserting shapes."""

    def checkpoint_filter_fn(self, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]: ...


@runtime_checkable
class CountsClassesInStateDict(Protocol):
    """Tells the class count a state dict was trained for (when the classifier rows alone cannot)."""

    def num_classes_in_state_dict(self, state_dict: Dict[str, Tensor]) -> Optional[int]: ...


@runtime_checkable
class OfflineRebuildable(Protocol):
    """Turns its creation arguments into ones that rebuild it as it is now (after ``reset_classifier``, say) without
    downloading anything."""

    def offline_model_args(self, args: Dict[str, Any]) -> Dict[str, Any]: ...


@runtime_checkable
class DecaySkipping(Protocol):
    """Names parameters weight decay must leave alone (position embeddings, class token)."""

    def no_weight_decay(self) -> Iterable[str]: ...


@runtime_checkable
class PretrainedConfigured(Protocol):
    """A model ``create_model`` built (or one that says the same): its ``pretrained_cfg`` dict (``architecture``,
    ``input_size``, ``mean``, ``std``, ``category_ids``, ...)."""

    pretrained_cfg: Dict[str, Any]


@runtime_checkable
class GanModel(Protocol):
    """A class-conditional (``num_classes > 0``) or unconditional GAN, as ``SAGAN``: ``generator(z (B, z_dim),
    labels (B,) | None) -> (B, 3, img_size, img_size)`` in [-1, 1], ``discriminator(images, labels) -> (B,)``, an EMA
    copy of the generator (or None) that ``sampler`` and ``sample(n) -> (n, 3, H, W)`` use and ``update_ema`` moves."""

    generator: nn.Module
    discriminator: nn.Module
    generator_ema: Optional[nn.Module]
    num_classes: int
    z_dim: int
    img_size: int

    @property
    def sampler(self) -> nn.Module:
        """The generator that samples: the EMA copy when there is one."""
        ...

    def sample(self, n: int, *args: Any, **kwargs: Any) -> Tensor: ...

    def update_ema(self, decay: float, *args: Any, **kwargs: Any) -> None: ...


def _members(protocol: type) -> List[str]:
    names = getattr(protocol, "__protocol_attrs__", None)  # Python >= 3.12
    if names is None:
        names = {
            n
            for base in protocol.__mro__[:-1]
            if base not in (Protocol, Generic, object)
            for n in [*getattr(base, "__annotations__", {}), *vars(base)]
            if not n.startswith("_")
        }
    return sorted(names)


def missing_members(obj: object, protocol: type) -> List[str]:
    """The members ``protocol`` declares that ``obj`` lacks (empty: ``obj`` satisfies it). Looked up statically
    (``inspect.getattr_static``): a property is not run, so asking never reads a file or builds anything."""
    missing = []
    for name in _members(protocol):
        try:
            inspect.getattr_static(obj, name)
        except AttributeError:
            if not (isinstance(obj, nn.Module) and name in obj._modules):  # a submodule lives in _modules
                missing.append(name)
    return missing


def conforms(obj: object, protocol: type) -> bool:
    """Whether ``obj`` has every member of ``protocol`` (:func:`missing_members` is empty)."""
    return not missing_members(obj, protocol)


def check_protocol(obj: object, protocol: type, what: str) -> None:
    """Raise ``TypeError`` (one line: ``what``, its type, the protocol, the missing members) unless ``obj`` has
    every member of ``protocol``."""
    missing = missing_members(obj, protocol)
    if missing:
        raise TypeError(f"{what}: {type(obj).__name__} is not a {protocol.__name__}: it lacks {', '.join(missing)}")
