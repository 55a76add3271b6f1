"""A model factory's typed options, read from its signature: what :func:`~vision_attn.models.validate_model_args`
checks a config's ``model_args`` against before anything is built.

A factory's own parameters count first; its ``**kwargs`` are the options of the class it returns (its return
annotation, e.g. ``-> VisionTransformer``: that class's ``__init__``). An annotation this module cannot check (a
forward reference it cannot resolve, a protocol) accepts any value; an unannotated parameter too.
"""

from __future__ import annotations

import collections.abc
import inspect
import typing
from typing import Any, Callable, Dict, NamedTuple, Tuple

__all__ = ["Option", "factory_options", "matches", "type_name"]

_NONE = type(None)
_ANY = (Any, inspect.Parameter.empty)


class Option(NamedTuple):
    """One option: its annotation (``inspect.Parameter.empty`` when none) and its default."""

    annotation: Any
    default: Any


def _hints(fn: Callable) -> Dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # an unresolvable forward reference: fall back to what is already a type
        return {k: v for k, v in getattr(fn, "__annotations__", {}).items() if not isinstance(v, str)}


def _params(fn: Callable, skip_self: bool = False) -> Tuple[Dict[str, Option], bool, Dict[str, Any]]:
    hints = _hints(fn)
    params = list(inspect.signature(fn).parameters.values())[1 if skip_self else 0 :]
    options = {
        p.name: Option(hints.get(p.name, p.annotation if not isinstance(p.annotation, str) else Any), p.default)
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return options, any(p.kind == p.VAR_KEYWORD for p in params), hints


def factory_options(fn: Callable) -> Tuple[Dict[str, Option], bool]:
    """``(options, open)``: the options ``fn`` takes by name, and whether it takes others it does not declare (a
    ``**kwargs`` with no class to follow)."""
    options, var_kw, hints = _params(fn)
    if not var_kw:
        return options, False
    target = hints.get("return")
    if not (inspect.isclass(target) and target.__init__ is not object.__init__):
        return options, True
    cls_options, cls_open, _ = _params(target.__init__, skip_self=True)
    return {**cls_options, **options}, cls_open


def type_name(tp: Any) -> str:
    """``Optional[Tuple[int, int]]`` -> ``"tuple[int, int] or None"``: how an error names an expected type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        rest = [type_name(a) for a in args if a is not _NONE]
        return " or ".join(rest + (["None"] if _NONE in args else []))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin is not None:
        base = getattr(origin, "__name__", str(origin))
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{base}[{inner}]" if inner else base
    return getattr(tp, "__name__", str(tp))


def _matches_container(value: Any, origin: Any, args: Tuple[Any, ...]) -> bool:
    if origin is tuple:
        if not isinstance(value, (list, tuple)):  # YAML and JSON give lists for tuples
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return not args or (len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args)))
    if origin in (list, collections.abc.Sequence, set, frozenset, collections.abc.Iterable):
        ok = isinstance(value, (list, tuple, set, frozenset)) and not isinstance(value, str)
        return ok and (not args or all(matches(v, args[0]) for v in value))
    if origin in (dict, collections.abc.Mapping):
        ok = isinstance(value, dict)
        return ok and (not args or all(matches(k, args[0]) and matches(v, args[1]) for k, v in value.items()))
    if origin is collections.abc.Callable:
        return callable(value)
    if origin is type:
        return inspect.isclass(value)
    return True  # another generic: not checked


def matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` (as a config gives it: lists for tuples) fits the annotation ``tp``; ``int`` fits ``float``,
    ``bool`` fits only ``bool``."""
    if tp in _ANY or tp is object:
        return True
    if tp is None or tp is _NONE:
        return value is None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        return any(matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is not None:
        return _matches_container(value, origin, args)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if inspect.isclass(tp):
        return isinstance(value, tp) or (tp in (tuple, list) and isinstance(value, (list, tuple)))
    return True  # a TypeVar, a string annotation left unresolved, ...: not checked
