"""A registered model's options, typed: what ``model_args`` may hold for it, and their defaults.

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
from typing import Any, Callable, Dict, Optional, Tuple, Union

from torch import nn

from .registry import _MODELS, split_model_name

__all__ = ["model_option_defaults", "model_option_types", "validate_model_args"]

_NO_TYPE = object()  # an option without an annotation: any value


def _init_of(cls: type) -> Callable[..., Any]:
    """``cls.__init__`` (the nearest in its MRO), read from the class dicts."""
    return next(vars(c)["__init__"] for c in cls.__mro__ if "__init__" in vars(c))


def _factory(arch: str) -> Callable[..., nn.Module]:
    return _MODELS[split_model_name(arch)[0]]


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


def model_option_types(arch: str) -> Dict[str, Any]:
    """``option -> type hint`` of registered model ``arch``: its factory's named parameters and, for a factory that
    passes ``**kwargs`` on to the model class it returns, that class's ``__init__`` parameters."""
    fn = _factory(arch)
    cls = _returned_class(fn) if _open_ended(fn) else None
    params = {**(_parameters(_init_of(cls)) if cls is not None else {}), **_parameters(fn)}
    return {name: hint for name, (hint, _) in params.items()}


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


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` (parsed from YAML/JSON) fits ``hint``; unknown kinds of hint accept anything."""
    if hint is _NO_TYPE or hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list) or hint in (tuple, list) or origin is typing.Sequence or str(origin) == "<class 'collections.abc.Sequence'>":
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def _refuse(arch: str, name: str, value: Any, hint: Any) -> None:
    if not _matches(value, hint):
        raise ValueError(f"model {arch!r}: option {name!r} expects {_type_name(hint)}; got {value!r}")


def validate_model_args(arch: str, kwargs: Dict[str, Any]) -> None:
    """Raise ``ValueError`` (one line naming the model, the option and what it expects) unless every entry of
    ``kwargs`` is an option of registered model ``arch`` of the right type. Names outside the registry (a Hub
    repo, a path) are not checked here; nor are the extra options of a factory that hands them to another
    library (timm's ``resnet18(drop_rate=...)``).

    Local stand-in for the builder's ``validate_model_args`` of the same signature (delete at merge)."""
    if split_model_name(arch)[0] not in _MODELS:
        return
    fn = _factory(arch)
    named = _parameters(fn)
    for name, value in kwargs.items():
        if name in named:
            _refuse(arch, name, value, named[name][0])
    if not _open_ended(fn):
        unknown = sorted(set(kwargs) - set(named))
        if unknown:
            raise ValueError(f"model {arch!r} has no option {unknown[0]!r}; its options: {', '.join(sorted(named))}")
        return
    cls = _returned_class(fn)
    passed = _recorded_class_args(fn, cls, kwargs) if cls is not None else None
    if cls is None or passed is None:
        return
    init = _parameters(_init_of(cls))
    for name in kwargs:  # an option the class does not take (the factory passed it on, or it raised)
        if name not in named and name not in init and name in passed:
            raise ValueError(f"model {arch!r} has no option {name!r}; its options: "
                             f"{', '.join(sorted(set(named) | set(init)))}")
    for name, value in passed.items():
        if name in init:
            _refuse(arch, name, value, init[name][0])
