"""Reading checkpoints safely, and loading them into a model through its ``checkpoint_filter_fn``.

The foreign-weight maps those filters call (timm ViT, torchvision/timm ResNet, official and Hugging Face DETR) live
in :mod:`vision_attn.models.weights`, one module per source; this module only reads, unwraps and checks.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Union, cast
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from .protocols import ClassifierModel, CountsClassesInStateDict, FiltersCheckpoints, ResettableClassifier, conforms

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "Checkpoint",
    "read_checkpoint",
    "load_state_dict",
    "load_pretrained",
    "resolve_checkpoint",
    "num_classes_in",
]

log = logging.getLogger(__name__)

# Keys under which known checkpoint formats nest the model's weights, in order of preference.
# Lightning .ckpt of our tasks: {"state_dict": {"model.<k>": ..., "ema.module.<k>": ...}}.
_NESTED_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module")
_EMA_PREFIX = "ema.module."
_TASK_PREFIX = "model."


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, foreign or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint carries pickled code or objects other than tensors; it was not executed."""


def resolve_checkpoint(source: Union[str, Path], cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """A local path for ``source``: the path itself, a URL downloaded once into the cache, or ``hf-hub:org/repo[@rev]``
    (its ``model.safetensors`` or ``pytorch_model.bin``, through the Hugging Face cache).

    The cache is ``$TORCH_HOME/hub/checkpoints`` (torch.hub's, shared with timm and torchvision) unless
    ``cache_dir`` is given.
    """
    s = str(source)
    if s.startswith("hf-hub:"):  # a Hub repo's weights, through the Hugging Face cache (HF_HUB_OFFLINE respected)
        from .hub import WEIGHTS_NAMES, hub_download, split_repo_id

        repo_id, revision = split_repo_id(s)
        return hub_download(repo_id, WEIGHTS_NAMES, revision=revision, cache_dir=cache_dir)
    if urlparse(s).scheme in ("http", "https"):
        cache = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
        cache.mkdir(parents=True, exist_ok=True)
        # hub URLs often end in the same file name (".../resolve/main/model.safetensors"): key by the URL too
        target = cache / f"{hashlib.sha256(s.encode()).hexdigest()[:10]}-{os.path.basename(urlparse(s).path)}"
        if not target.exists():
            log.info("downloading %s to %s", s, target)
            try:
                torch.hub.download_url_to_file(s, str(target), progress=True)  # writes a temp file, then renames
            except OSError as err:  # URLError, timeouts, DNS failures: no network, or the file moved
                raise CheckpointError(
                    f"cannot download {s} ({getattr(err, 'reason', err)}); without network, fetch it on a machine "
                    f"that has one and pass the file's path, or copy it to {target}"
                ) from None
        return target
    path = Path(s).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a file path or an http(s) URL)")
    return path


def _pickle_imports(path: Path) -> Optional[list]:
    """What a raw pickle file would import, read from its opcodes without executing anything; None if not a pickle."""
    names: list = []
    strings: list = []
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


def _read(path: Path) -> object:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file (truncated or foreign?): {e}") from None
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
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (the weights-only unpickler could not read it)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
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
        sd = {k[len(_EMA_PREFIX):]: v for k, v in sd.items() if k.startswith(_EMA_PREFIX)}
    elif sd and all(k.startswith(_TASK_PREFIX) for k in sd):
        sd = {k[len(_TASK_PREFIX):]: v for k, v in sd.items()}
    if sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
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


def _classifier_prefix(model: nn.Module) -> Optional[str]:
    head = cast(ClassifierModel, model).get_classifier() if conforms(model, ClassifierModel) else None
    if head is None:
        return None
    for name, m in model.named_modules():
        if m is head:
            return name
    return None


def _mapped(model: nn.Module, sd: Dict[str, Tensor]) -> Dict[str, Tensor]:
    return cast(FiltersCheckpoints, model).checkpoint_filter_fn(sd) if conforms(model, FiltersCheckpoints) else dict(sd)


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


def load_pretrained(model: nn.Module, source: Union[str, Path, Checkpoint], strict: bool = True) -> nn.Module:
    """Load weights from ``source`` (a path, URL or :class:`Checkpoint`) into ``model``, adapting foreign layouts.

    The model's ``checkpoint_filter_fn(state_dict)`` (when it has one) maps foreign keys and resamples
    positions; a classifier of another size (or absent from the file) is left at its initialisation with a
    warning; any other mismatch is an error naming the key and both shapes.
    """
    ck = read_checkpoint(source)
    path = ck.path
    sd = _mapped(model, ck.state_dict)
    own = model.state_dict()
    head = _classifier_prefix(model)
    if head:
        head_keys = [k for k in own if k.startswith(head + ".")]
        mismatched = [k for k in head_keys if k in sd and sd[k].shape != own[k].shape]
        if mismatched:
            log.warning(
                "%s: classifier %r has %s outputs in the checkpoint, %s in the model; re-initialising it",
                path.name, head, tuple(sd[mismatched[0]].shape)[0], tuple(own[mismatched[0]].shape)[0],
            )
        elif head_keys and not any(k in sd for k in head_keys):
            log.warning("%s: has no classifier %r; it keeps its initialisation", path.name, head)
        if mismatched or (head_keys and not any(k in sd for k in head_keys)):
            for k in [k for k in sd if k.startswith(head + ".")]:
                sd.pop(k)
            for k in head_keys:
                own.pop(k, None)
    wrong = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{path}: {len(wrong)} tensor(s) do not fit {type(model).__name__}: " + "; ".join(wrong[:5]))
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{path}: does not match {type(model).__name__}: missing {len(missing)} key(s) {missing[:5]}, "
            f"unexpected {len(unexpected)} key(s) {unexpected[:5]}"
        )
    model.load_state_dict(sd, strict=False)
    return model
