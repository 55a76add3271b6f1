"""A registered model's option defaults: what ``--print_config`` shows in ``model_args`` (the types are checked by
:func:`~vision_attn.models.validate_model_args`, :mod:`vision_attn.models.options`).

A factory (``vit_tiny_patch4_32(**kwargs)``) passes its options on to the class it returns (its return annotation,
e.g. :class:`~vision_attn.models.VisionTransformer`), with its own presets (``embed_dim=192``): the options are the
factory's named parameters and that class's ``__init__`` parameters, typed by their annotations;
:func:`model_option_defaults` reads the presets by recording what the factory passes to the class (nothing is
built).
"""

from __future__ import annotations

import inspect
import json
import typing
from typing import Any, Callable, Dict, Optional, Tuple

from torch import nn

from .registry import model_entrypoint, split_model_name

__all__ = ["model_option_defaults"]

_NO_TYPE = object()  # an option without an annotation: any value


def _init_of(cls: type) -> Callable[..., Any]:
    """``cls.__init__`` (the nearest in its MRO), read from the class dicts."""
    return next(vars(c)["__init__"] for c in cls.__mro__ if "__init__" in vars(c))


def _factory(arch: str) -> Callable[..., nn.Module]:
    return model_entrypoint(split_model_name(arch)[0])


def _returned_class(fn: Callable[..., Any]) -> Optional[type]:
    try:
        cls = typing.get_type_hints(fn).get("return")
    except Exception:  # an annotation that does not resolve: no class to read options from
        return None
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None


def _parameters(fn: Callable[..., Any]) -> Dict[str, Tuple[Any, Any]]:
    """``name -> (type hint or _NO_TYPE, default or inspect.Parameter.empty)`` of ``fn``'s named parameters."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            out[name] = (hints.get(name, _NO_TYPE), p.default)
    return out


def _open_ended(fn: Callable[..., Any]) -> bool:
    return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


class _Recorded(Exception):
    def __init__(self, kwargs: Dict[str, Any]) -> None:
        super().__init__("recorded")
        self.kwargs = kwargs


def _recorded_class_args(fn: Callable[..., Any], cls: type, kwargs: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """What ``fn(**kwargs)`` passes to ``cls`` (its presets and the options given), read without building anything;
    None when ``fn`` fails before it gets there."""

    def record(self, *args, **kw):
        raise _Recorded(kw)

    own = vars(cls).get("__init__")
    setattr(cls, "__init__", record)  # noqa: B010  (patched for this call only: reads the presets, builds nothing)
    try:
        fn(**kwargs)
    except _Recorded as rec:
        return rec.kwargs
    except Exception:  # the factory refused the options itself: building reports it
        return None
    finally:
        if own is None:
            delattr(cls, "__init__")
        else:
            setattr(cls, "__init__", own)  # noqa: B010
    return None


def model_option_defaults(arch: str) -> Dict[str, Any]:
    """The options ``arch`` is built with when none is given (the class defaults overridden by the factory's
    presets), JSON values only (what a config can hold)."""
    fn = _factory(arch)
    cls = _returned_class(fn) if _open_ended(fn) else None
    defaults = {k: d for k, (_, d) in _parameters(fn).items() if d is not inspect.Parameter.empty}
    if cls is not None:
        class_defaults = {k: d for k, (_, d) in _parameters(_init_of(cls)).items() if d is not inspect.Parameter.empty}
        defaults = {**class_defaults, **defaults, **(_recorded_class_args(fn, cls, {}) or {})}
    out = {}
    for k, v in defaults.items():
        try:
            out[k] = json.loads(json.dumps(v))
        except (TypeError, ValueError):  # a class or a function: not a config value
            continue
    return out
