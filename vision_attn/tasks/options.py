"""The tasks' typed option groups (``criterion``, ``optim``, ``evaluation``): dataclasses in Python and YAML, plain
dicts in checkpoints (so they load with ``weights_only=True``); :func:`option_group` turns either into the dataclass."""

from __future__ import annotations

import dataclasses
from typing import Any, Type, TypeVar

__all__ = ["option_group"]

_Group = TypeVar("_Group")


def option_group(cls: Type[_Group], value: Any, owner: str, arg: str) -> _Group:
    """``value`` as a ``cls`` (a dataclass): one already, or a dict of its fields (a checkpoint's hyper-parameters, a
    YAML group); anything else, or an unknown field, is one ``TypeError`` line naming ``owner`` and ``arg``."""
    if isinstance(value, dict):
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]  # cls is a dataclass
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise TypeError(f"{owner}: {arg} has no option {unknown[0]!r}; expected some of {names}")
        value = cls(**value)
    if not isinstance(value, cls):
        raise TypeError(f"{owner}: {arg} must be a {cls.__name__} or a dict of its fields; got {value!r}")
    return value
