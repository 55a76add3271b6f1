"""Reading checkpoints safely: a file (or URL, or Hub repo) -> a :class:`Checkpoint` of flat model weights.

Nothing in a file is executed. Fitting the weights into a model (foreign key maps, head and first-conv adaptation)
is :mod:`vision_attn.models.loader`'s step; the maps themselves live in :mod:`vision_attn.models.weights`.
"""

from __future__ import annotations

import argparse
import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Union

import torch
from torch import Tensor

from .download import resolve_checkpoint
from .errors import CheckpointError, UnsafeCheckpointError

__all__ = [
    "CheckpointError",
    "check_zip_records",
    "UnsafeCheckpointError",
    "Checkpoint",
    "read_checkpoint",
    "load_state_dict",
    "resolve_checkpoint",
]

# Keys under which known checkpoint formats nest the model's weights, in order of preference.
# Lightning .ckpt of our tasks: {"state_dict": {"model.<k>": ..., "ema.module.<k>": ...}}.
_NESTED_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module")
_EMA_PREFIX = "ema.module."
_TASK_PREFIX = "model."


def _pickle_imports(path: Path) -> Optional[list]:
    """What a raw pickle file would import, read from its opcodes without executing anything; None if not a pickle."""
    names: List[str] = []
    strings: List[str] = []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(".".join(strings[-2:]))
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # not a pickle stream at all
        return None
    return names


def check_zip_records(path: Union[str, Path]) -> None:
    """Refuse a zipped torch file whose records could inflate beyond the file (a "zip bomb"), before any is read.

    ``torch.save`` stores every record uncompressed, so a record is accepted only if stored (not deflated) and its
    declared size fits in the file; a file that is not a zip (legacy pickle) passes unchanged."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            records = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip: the reader itself says what is wrong with it
    size = path.stat().st_size
    for r in records:
        if r.compress_type != zipfile.ZIP_STORED or r.file_size > size or r.compress_size > size:
            raise CheckpointError(
                f"{path}: refused to load: record {r.filename} declares {r.file_size} bytes "
                f"({'stored' if r.compress_type == zipfile.ZIP_STORED else 'compressed'}) in a {size}-byte file; "
                "torch.save writes only stored records that fit in the file"
            )


def _read(path: Path) -> object:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file (truncated or foreign?): {e}") from None
    check_zip_records(path)
    try:
        # argparse.Namespace: training checkpoints (DETR's among them) store their command-line args; unpickling one
        # only sets attributes, so it is allowed beside tensors and plain containers.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        # torch's "Unsupported global: GLOBAL <name>" first: case-blind, the other pattern would name "GLOBAL"
        found = re.search(r"Unsupported global: GLOBAL (\S+)|unsupported GLOBAL:? ?(\S+)", msg, re.IGNORECASE)
        imports = [next(g for g in found.groups() if g)] if found else _pickle_imports(path)
        if imports:
            raise UnsafeCheckpointError(
                f"{path}: refused to load: it holds pickled code or objects other than tensors and plain "
                f"containers (it would import {', '.join(sorted(set(imports))[:5])}). Nothing in it was executed. "
                "Load only files you trust, or re-save the weights as a plain state dict or .safetensors"
            ) from None
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (the weights-only unpickler could not read it)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        first = f"{type(e).__name__}: {first}" if isinstance(e, (KeyError, IndexError, TypeError)) else first
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({first})") from None


def _unwrap(obj: Any, path: Path) -> Dict[str, Tensor]:
    """Find the model's tensors inside a checkpoint's nesting (Lightning, DETR, timm EMA, DDP)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    while not any(isinstance(v, Tensor) for v in obj.values()):
        key = next((k for k in _NESTED_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            raise CheckpointError(
                f"{path}: found no weights; expected a state dict or one nested under one of {list(_NESTED_KEYS)}, "
                f"found keys {sorted(map(str, obj))[:10]}"
            )
        obj = obj[key]
    sd = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if any(k.startswith(_EMA_PREFIX) for k in sd):  # our task with EMA: the EMA weights are the evaluated ones
        sd = {k[len(_EMA_PREFIX) :]: v for k, v in sd.items() if k.startswith(_EMA_PREFIX)}
    elif sd and all(k.startswith(_TASK_PREFIX) for k in sd):
        sd = {k[len(_TASK_PREFIX) :]: v for k, v in sd.items()}
    if sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


class Checkpoint(NamedTuple):
    """A checkpoint read once: its file, its model weights, and the class count and names it declares (our training
    checkpoints carry top-level ``num_classes`` and ``class_names``; other files declare none)."""

    path: Path
    state_dict: Dict[str, Tensor]
    num_classes: Optional[int] = None
    class_names: Optional[List[str]] = None


def read_checkpoint(source: Union[str, Path, Checkpoint]) -> Checkpoint:
    """Read a checkpoint (path or http(s) URL) without executing anything in it; see :func:`load_state_dict`."""
    if isinstance(source, Checkpoint):
        return source
    path = resolve_checkpoint(source)
    obj = _read(path)
    sd = _unwrap(obj, path)
    n = obj.get("num_classes") if isinstance(obj, Mapping) else None
    names = obj.get("class_names") if isinstance(obj, Mapping) else None
    n = int(n) if isinstance(n, int) or (isinstance(n, Tensor) and n.numel() == 1) else None
    names = [str(c) for c in names] if isinstance(names, (list, tuple)) else None
    return Checkpoint(path, sd, n, names)


def load_state_dict(source: Union[str, Path]) -> Dict[str, Tensor]:
    """Read a checkpoint into a flat ``{name: tensor}`` dict without executing anything in it.

    Accepts ``.safetensors``, ``.pth``/``.pt``/``.bin`` (loaded with ``weights_only=True``) and Lightning
    ``.ckpt``; a path or an http(s) URL.
    """
    return read_checkpoint(source).state_dict
