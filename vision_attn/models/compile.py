"""``torch.compile`` for a task's networks, in place, so parameter names, checkpoints and hooks stay as they are."""

from __future__ import annotations

from typing import Union

from torch import nn

__all__ = ["compile_in_place"]


def compile_in_place(mode: Union[bool, str], *modules: nn.Module) -> None:
    """``mode``: False (nothing), True (the default inductor backend) or a backend name (``"aot_eager"``, ...).

    Uses ``nn.Module.compile`` (the module's forward is compiled; ``state_dict`` keys get no ``_orig_mod.`` prefix,
    unlike ``torch.compile(module)``); a module compiled already is left alone."""
    if not mode:
        return
    if not isinstance(mode, (bool, str)):
        raise TypeError(f"compile must be a bool or a torch.compile backend name; got {type(mode).__name__}")
    backend = "inductor" if mode is True else mode
    for module in modules:
        if getattr(module, "_compiled_call_impl", None) is None:
            module.compile(backend=backend)
