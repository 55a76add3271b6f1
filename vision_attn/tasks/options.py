"""The tasks' typed option groups (``criterion``, ``optim``, ``evaluation``): dataclasses in Python and YAML, plain
dicts in checkpoints (so they load with ``weights_only=True``); :func:`option_group` turns either into the dataclass,
and :class:`MovedOptions` reads a checkpoint saved while the options were flat."""

from __future__ import annotations

import dataclasses
import os
import pickle
from typing import Any, ClassVar, Dict, Optional, Type, TypeVar

import torch

__all__ = ["option_group", "MovedOptions", "moved_option_groups"]

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


def moved_option_groups(moved: Dict[str, str], hparams: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The groups that ``hparams`` (a checkpoint's, saved before options moved; ``moved``: old name -> group) gives
    as flat values: ``{group: {option: value}}``, to be passed as the groups' arguments; ``{}`` when none is flat."""
    groups: Dict[str, Dict[str, Any]] = {}
    for name, group in moved.items():
        if name in hparams:
            saved = hparams.get(group)
            groups.setdefault(group, dict(saved) if isinstance(saved, dict) else {})[name] = hparams[name]
    return groups


class MovedOptions:
    """For a LightningModule some of whose options moved into a group (``MOVED_OPTIONS``: old name -> group).

    Lightning's ``load_from_checkpoint`` passes a checkpoint's hyper-parameters to ``__init__`` and silently drops
    those it does not take, so a checkpoint saved while the options were flat would load with the defaults. Here its
    flat values go to their group first (arguments given to ``load_from_checkpoint`` still win)."""

    MOVED_OPTIONS: ClassVar[Dict[str, str]] = {}

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:
        groups = moved_option_groups(cls.MOVED_OPTIONS, _hparams_of(checkpoint_path))
        for group, values in groups.items():
            given = kwargs.get(group)
            if isinstance(given, dict):
                kwargs[group] = {**values, **given}
            elif given is None:
                kwargs[group] = values
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)  # type: ignore[misc]  # a mixin of LightningModule


def _hparams_of(checkpoint_path: Any) -> Dict[str, Any]:
    """A local checkpoint's hyper-parameters, read without running code (weights-only, tensors memory-mapped);
    ``{}`` for anything else (a URL, a stream, a pickle with objects): Lightning's own loading reports those."""
    if not isinstance(checkpoint_path, (str, os.PathLike)) or not os.path.isfile(checkpoint_path):
        return {}
    try:
        checkpoint: Optional[Dict[str, Any]] = torch.load(
            checkpoint_path, map_location="cpu", weights_only=True, mmap=True
        )
    except (pickle.UnpicklingError, RuntimeError, ValueError, OSError):
        return {}
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    return hparams if isinstance(hparams, dict) else {}
