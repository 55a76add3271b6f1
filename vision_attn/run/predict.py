"""Predict on your own image files: ``OUT/predictions.json`` (and PNGs) for a registered model or a config's task.

The model runs through its task's ``predict_step`` (``tools/train.py predict`` runs the same one) over the loader
of :mod:`vision_attn.data.images`, and :mod:`vision_attn.callbacks.predictions` formats the records, so both
tools write the same file for the same checkpoint.

- Classification: the top-k classes (softmax) of each image.
- Detection (DETR): boxes in the file's own pixels and the training set's category ids, and ``<name>_boxes.png``.
  Images are batched only with images of the same size (never padded): a DETR's outputs change with padding (its
  backbone sees the padded zeros, as in the official code), so an image's detections never depend on the others.
- ``attention=True``: ``<name>_attention.png`` (ViT: rollout and last-layer class-token attention; DETR: decoder
  cross-attention of each detected object) or ``<name>_pixel_attention_<module>.png`` (non-local, SASA).
- A file that cannot be read gets ``{"file", "error"}`` in predictions.json and a line on stderr; the others are
  predicted; :func:`predict` returns how many failed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..attention.capture import capture_attention
from ..callbacks.predictions import (
    category_map,
    class_names_for,
    classification_records,
    detection_records,
    write_predictions,
)
from ..data.coco.transforms import detr_predict_transform
from ..data.images import MAX_PIXELS, find_images, image_loader, load_rgb
from ..data.protocols import PredictsImageFiles
from ..data.transforms import AlbumentationsTransform
from ..models import create_eval_transform, create_model
from ..models.detr import DETR
from ..models.protocols import ClassifierModel, conforms
from ..models.vit import VisionTransformer
from ..tasks import ClassificationTask, DetectionTask
from .cli import load_task
from .viz.boxes import last_cross_attention, plot_detections, plot_query_attention
from .viz.overlays import attention_rollout, plot_pixel_maps, plot_token_maps, token_relevance, vit_block_maps
from .viz.style import to_display_rgb

__all__ = ["Predictor", "load_predictor", "predict", "predict_batches", "predict_loader", "predictor_transform"]

MAX_QUERY_PANELS = 8  # decoder-attention panels per image: the best-scoring detections


def _eval_transform(
    model: nn.Module, datamodule: Optional[pl.LightningDataModule] = None
) -> Callable[[Image.Image], Tensor]:
    """THE preprocessing of predict, PIL RGB image -> ``(3, H, W)``: the datamodule's ``predict_transform()`` (what a
    config's model was trained with; ``train.py predict`` uses the same); for a DETR DETR's evaluation resize (short
    side 800, long side at most 1333, ImageNet statistics); else ``vision_attn.create_eval_transform(model)`` when
    (timm's eval transform of the model's ``pretrained_cfg``)."""
    if datamodule is not None and conforms(datamodule, PredictsImageFiles):
        return datamodule.predict_transform()
    if isinstance(model, DETR):
        return AlbumentationsTransform(detr_predict_transform())
    return create_eval_transform(model)


def _normalization(transform: Any) -> Tuple[Optional[Sequence[float]], Optional[Sequence[float]]]:
    """``(mean, std)`` of the Normalize step of an albumentations or torchvision pipeline (None, None if none)."""
    stack, seen = [transform], set()
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        # albumentations' or torchvision's transform objects: duck-typed, as neither declares a type for this
        if type(t).__name__ == "Normalize" and hasattr(t, "mean") and hasattr(t, "std"):
            mean, std = np.asarray(t.mean, dtype=float).reshape(-1), np.asarray(t.std, dtype=float).reshape(-1)
            if mean.max() > 1.0:  # albumentations may hold them in 0..255 units
                mean, std = mean / 255.0, std / 255.0
            return tuple(mean.tolist()), tuple(std.tolist())
        for attr in ("transform", "transforms"):
            inner = getattr(t, attr, None)
            stack += list(inner) if isinstance(inner, (list, tuple)) else ([inner] if inner is not None else [])
    return None, None


def _checkpoint_meta(ckpt: Optional[str]) -> Dict[str, Any]:
    """What a training checkpoint records beside the weights (empty if nothing): ``num_classes``, ``class_names``,
    ``label_to_category_id`` (detection), and its task's ``model`` and ``model_args``."""
    path = Path(str(ckpt)).expanduser() if ckpt else None
    if path is None or "://" in str(ckpt) or not path.is_file() or path.suffix == ".safetensors":
        return {}
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable here: loading the weights reports it properly
        return {}
    if not isinstance(obj, dict):
        return {}
    hp = obj.get("hyper_parameters") or {}
    return {
        "num_classes": obj.get("num_classes", hp.get("num_classes")),
        "class_names": obj.get("class_names"),
        "label_to_category_id": obj.get("label_to_category_id"),
        "model": hp.get("model"),
        "model_args": hp.get("model_args"),
    }


@runtime_checkable
class CarriesTransform(Protocol):
    """A task that carries its own preprocessing (an exported folder's ``OnnxTask``): PIL image -> ``(3, H, W)``."""

    transform: Callable[[Image.Image], Tensor]


@dataclass
class Predictor:
    """A task ready to predict, with how to read its labels."""

    task: pl.LightningModule
    datamodule: Optional[pl.LightningDataModule]
    detection: bool
    labels: Any  # classification: class names by label (or None); detection: label -> (category id, name)

    @property
    def model(self) -> nn.Module:
        return self.task.eval_model if isinstance(self.task, ClassificationTask) else self.task.model


def load_predictor(
    model: Optional[str] = None, config: Optional[str] = None, ckpt: Optional[str] = None, overrides: Sequence[str] = ()
) -> Predictor:
    """The task of ``config`` (with ``ckpt``), or registered ``model`` (``NAME[.TAG]``; weights ``ckpt``, else its
    published ones) wrapped in its task; labels from the checkpoint, the model, the data, or ImageNet/COCO."""
    if (model is None) == (config is None):
        raise ValueError("predict needs exactly one of --model NAME[.TAG] and --config CFG")
    meta = _checkpoint_meta(ckpt)
    if config is not None:
        task, dm, _ = load_task(config, ckpt, overrides)
    else:
        kwargs: Dict[str, Any] = dict(meta["model_args"] or {}) if meta.get("model") == model else {}
        if meta.get("num_classes"):
            kwargs["num_classes"] = int(meta["num_classes"])
        net = create_model(model, pretrained=ckpt if ckpt else True, **kwargs)
        if not isinstance(net, DETR) and not (conforms(net, ClassifierModel) and net.num_classes):
            raise ValueError(
                f"--model {model}: {type(net).__name__} is no image classifier or detector; predict needs one"
            )
        task, dm = (DetectionTask(net) if isinstance(net, DETR) else ClassificationTask(net)), None
    if not isinstance(task, (ClassificationTask, DetectionTask)):
        raise ValueError(
            f"predict takes image classifiers and detectors; {type(task).__name__} has no image input "
            "(a GAN generates images: use tools/sample.py)"
        )
    detection = isinstance(task, DetectionTask)
    names = class_names_for(task.model, dm, meta.get("class_names"), detection)
    labels = category_map(task.num_classes, names, dm, meta.get("label_to_category_id")) if detection else names
    return Predictor(task.eval(), dm, detection, labels)


def _stem(file: str, used: set) -> str:
    stem = Path(file).stem or "image"
    while stem in used:
        stem = f"{stem}_"
    used.add(stem)
    return stem


def _draw_boxes(record: Dict[str, Any], path: Path, threshold: float) -> Path:
    rgb = torch.from_numpy(np.asarray(load_rgb(record["file"]))).float() / 255.0  # the file itself, upright
    dets = record["detections"]
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)]).reshape(-1, 4)
    names = {d["category_id"]: d["label"] for d in dets}
    return plot_detections(
        rgb,
        boxes,
        [d["category_id"] for d in dets],
        [d["score"] for d in dets],
        names,
        path,
        f"{Path(record['file']).name}: {len(dets)} detections >= {threshold}",
    )


def _draw_attention(
    p: Predictor,
    maps: Dict[str, Tensor],
    row: int,
    image: Tensor,
    batch_hw: Tuple[int, int],
    det: Optional[Dict[str, Tensor]],
    info: Dict[str, Any],
    stats: Tuple,
    threshold: float,
    pixels,
    stem: Path,
) -> List[Path]:
    """The attention PNG(s) of one image: ``image (3, H, W)`` is its unpadded model input, ``batch_hw`` the batch's."""
    net, (mean, std) = p.model, stats
    rgb = to_display_rgb(image, mean, std) if mean is not None else to_display_rgb(image)
    if isinstance(net, VisionTransformer):
        layers = vit_block_maps(maps)
        grid = net.patch_embed.feature_grid(*image.shape[-2:])
        P, cls = net.num_prefix_tokens, "class token" if net.num_prefix_tokens else "mean over patches (avg pooling)"
        layers = [w[row : row + 1].float().cpu() for w in layers]
        panels = {
            "attention rollout": token_relevance(attention_rollout(layers), P)[0].reshape(grid),
            f"last layer, {cls}": token_relevance(layers[-1].mean(1), P)[0].reshape(grid),
        }
        return [plot_token_maps(rgb, panels, f"{stem}_attention.png", Path(info["file"]).name)]
    if isinstance(net, DETR):
        keep = [
            q
            for q in det["scores"].argsort(descending=True).tolist()
            if det["scores"][q] >= threshold and int(det["labels"][q]) in p.labels
        ][:MAX_QUERY_PANELS]
        if not keep:
            return []
        H, W = image.shape[-2:]
        scale = torch.tensor([W / info["width"], H / info["height"]] * 2)
        names = {lab: name for lab, (_, name) in p.labels.items()}
        attn = last_cross_attention(maps)[row].float().mean(0).cpu()  # (Q, h*w) over the batch's feature grid
        hw = net.feature_size(*batch_hw)
        return [
            plot_query_attention(
                rgb,
                attn,
                hw,
                net.backbone.stride,
                keep,
                det["boxes"].float().cpu() * scale,
                det["labels"].tolist(),
                det["scores"].tolist(),
                names,
                f"{stem}_attention.png",
                f"{Path(info['file']).name}: last decoder layer cross-attention (mean over heads)",
            )
        ]
    return plot_pixel_maps(net, maps, row, image, pixels, Path(f"{stem}_pixel_attention"))


def predictor_transform(p: Predictor) -> Callable[[Image.Image], Tensor]:
    """THE preprocessing of ``p`` (see :func:`_eval_transform`; an exported model carries its own)."""
    return p.task.transform if conforms(p.task, CarriesTransform) else _eval_transform(p.model, p.datamodule)


def predict_loader(
    p: Predictor, inputs: Sequence[Any], batch_size: Optional[int] = None, max_pixels: Optional[int] = MAX_PIXELS
) -> DataLoader:
    """The loader of image files, PIL images or RGB tensors ``(3, H, W)`` for ``p`` (its transform and batching);
    files declaring more than ``max_pixels`` pixels are reported as unreadable, never decoded."""
    own_bs = p.datamodule.predict_batch_size if conforms(p.datamodule, PredictsImageFiles) else None
    default_bs = own_bs or (8 if p.detection else 32)
    return image_loader(inputs, predictor_transform(p), batch_size or default_bs, 0, p.detection, max_pixels)


def predict_batches(
    p: Predictor,
    loader: DataLoader,
    top_k: int = 5,
    threshold: float = 0.5,
    attention: bool = False,
    on_batch: Optional[Callable[..., None]] = None,
) -> List[Dict[str, Any]]:
    """Run ``p`` over ``loader``; returns the records of ``predictions.json`` (with ``_index``, in batch order).

    ``on_batch(batch, pred, records, maps)`` sees each batch (``maps``: captured attention when ``attention``)."""
    device = torch.device("cuda" if torch.cuda.is_available() and isinstance(p.task, nn.Module) else "cpu")
    p.task.to(device)
    records: List[Dict[str, Any]] = []
    for i, batch in enumerate(loader):
        infos, images = batch[-1], batch[0]
        batch = tuple(b.to(device) if isinstance(b, Tensor) else b for b in batch)
        capture = capture_attention(p.model) if attention and images is not None else contextlib.nullcontext({})
        with torch.no_grad(), capture as maps:
            pred = p.task.predict_step(batch, i)
        if p.detection:
            new = detection_records(pred, infos, threshold, p.labels)
        else:
            new = classification_records(pred, infos, top_k, p.labels)
        records += new
        if on_batch is not None:
            on_batch(batch, pred, new, maps)
    return records


def predict(
    inputs: Sequence[str],
    output_dir: str,
    model: Optional[str] = None,
    config: Optional[str] = None,
    ckpt: Optional[str] = None,
    top_k: int = 5,
    threshold: float = 0.5,
    attention: bool = False,
    query_pixels: Optional[Sequence[Tuple[int, int]]] = None,
    batch_size: Optional[int] = None,
    overrides: Sequence[str] = (),
    max_pixels: Optional[int] = MAX_PIXELS,
) -> int:
    """Write ``output_dir/predictions.json`` (+ PNGs) for the image files of ``inputs`` (files, folders, globs);
    returns the number of files that could not be read (or declared more than ``max_pixels`` pixels)."""
    files = find_images(inputs)
    if not files:
        raise FileNotFoundError(f"--input {' '.join(map(str, inputs))}: no image files there")
    p = load_predictor(model, config, ckpt, overrides)
    out = Path(output_dir).expanduser()
    loader = predict_loader(p, files, batch_size, max_pixels)
    if attention:
        try:
            with capture_attention(p.model):
                pass
        except ValueError as e:  # a model without attention modules (a CNN baseline)
            print(f"--attention: {e}; no attention maps drawn", file=sys.stderr)
            attention = False
    stats, used = _normalization(loader.dataset.transform), set()

    def draw(batch, pred, new, maps) -> None:
        images, infos = batch[0], batch[-1]
        good = [info for info in infos if "error" not in info]
        for row, info in enumerate(good):
            stem = out / _stem(info["file"], used)
            if p.detection:
                _draw_boxes(next(r for r in new if r["_index"] == info["index"]), Path(f"{stem}_boxes.png"), threshold)
            if attention and maps:
                h, w = info["size"].tolist()
                _draw_attention(
                    p,
                    maps,
                    row,
                    images[row, :, :h, :w].cpu(),
                    tuple(images.shape[-2:]),
                    pred[row] if p.detection else None,
                    info,
                    stats,
                    threshold,
                    query_pixels,
                    stem,
                )

    records = predict_batches(p, loader, top_k, threshold, attention, draw)
    written = write_predictions(records, out / "predictions.json")
    failed = sum("error" in r for r in written)
    print(f"wrote {out / 'predictions.json'}: {len(written) - failed} images predicted, {failed} unreadable")
    return failed
