"""A training checkpoint -> a shareable model folder (``model.safetensors`` + ``config.json``).

:func:`load_model_for_export` builds a config's model with a run's weights (its EMA weights when the run kept them),
its class names (the checkpoint's, else the datamodule's) and its data's preprocessing in ``pretrained_cfg``; each
output format is one function over that model (:func:`export_safetensors`), picked by :func:`export`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

import pytorch_lightning as pl
from torch import nn

from ..data import CIFARDataModule, COCODataModule, ImageFolderDataModule
from ..models import load_pretrained, read_checkpoint

__all__ = ["FORMATS", "export", "export_safetensors", "load_model_for_export", "data_config_of"]

_SOURCE_KEYS = ("hf_hub_id", "url", "file", "source")


def data_config_of(datamodule: pl.LightningDataModule) -> Dict[str, Any]:
    """The evaluation preprocessing of our datamodules, in ``pretrained_cfg`` terms (what the model was trained on)."""
    if isinstance(datamodule, COCODataModule):
        o = datamodule.opts  # DETR's eval resize: short side val_size, long side at most max_size
        return dict(short_side=o.val_size, max_size=o.max_size, crop_mode="short_side", crop_pct=1.0,
                    input_size=(3, o.val_size, o.max_size or o.val_size), interpolation="bilinear")
    if isinstance(datamodule, ImageFolderDataModule):  # short side to img_size * 256 / 224, center crop
        return dict(input_size=(3, datamodule.img_size, datamodule.img_size), crop_pct=224 / 256, crop_mode="center",
                    interpolation="bilinear", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    if isinstance(datamodule, CIFARDataModule):  # the stored images, resized to img_size when set, no crop
        side = datamodule.img_size or datamodule.input_size
        return dict(input_size=(3, side, side), crop_pct=1.0, crop_mode="center", interpolation="bilinear",
                    mean=tuple(datamodule.spec.mean), std=tuple(datamodule.spec.std))
    return {}


def _class_names(datamodule: pl.LightningDataModule, n: int) -> Optional[list]:
    try:
        names = [str(c) for c in datamodule.classes]
    except (AttributeError, RuntimeError, OSError, ValueError):  # not set up, or the data is not on this machine
        return None
    return names if len(names) == n else None


def load_model_for_export(config: str, ckpt: Union[str, Path], overrides: Sequence[str] = ()) -> nn.Module:
    """The model of ``config`` with the weights of training checkpoint ``ckpt`` (EMA when present), in eval mode,
    its ``pretrained_cfg`` carrying the class names and the data's preprocessing."""
    from .cli import load_task

    ck = read_checkpoint(ckpt)
    # the run's weights replace the initial ones: do not fetch the config's pretrained weights first
    task, datamodule, _ = load_task(config, None, ["--model.init_args.pretrained", "null", *overrides])
    model = task.model
    load_pretrained(model, ck)
    cfg = model.pretrained_cfg
    for k in _SOURCE_KEYS:
        cfg.pop(k, None)
    cfg.update(data_config_of(datamodule), tag=None, num_classes=getattr(model, "num_classes", cfg.get("num_classes")))
    n = cfg["num_classes"]
    names = ck.class_names if ck.class_names and len(ck.class_names) == n else _class_names(datamodule, n)
    cfg["label_names_source"] = None
    cfg.pop("label_names", None)
    if names:
        cfg["label_names"] = names
    if isinstance(datamodule, COCODataModule):
        try:  # the data's own category id of each label (what predictions report)
            cfg["category_ids"] = [int(c) for c in datamodule.label_to_category_id]
        except (OSError, ValueError, RuntimeError):
            pass
    return model.eval()


def export_safetensors(model: nn.Module, output: Union[str, Path]) -> Path:
    """``output/model.safetensors`` + ``output/config.json`` (:func:`vision_attn.from_pretrained` rebuilds it)."""
    return model.save_pretrained(output)


FORMATS: Dict[str, Callable[[nn.Module, Union[str, Path]], Path]] = {"safetensors": export_safetensors}


def export(config: str, ckpt: Union[str, Path], output: Union[str, Path], format: str = "safetensors",
           overrides: Sequence[str] = ()) -> Path:
    """Export training checkpoint ``ckpt`` of ``config``'s model to ``output`` in ``format``; returns the folder."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}; got {format!r}")
    model = load_model_for_export(config, ckpt, overrides)
    out = FORMATS[format](model, output)
    print(f"wrote {out}")
    return Path(out)
