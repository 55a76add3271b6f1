"""``vision_attn.pipeline(task, model=...)``: inference in one line, the records of ``predictions.json``.

    >>> clf = va.pipeline("image-classification", model="vit_small_patch16_224.augreg_in21k_ft_in1k")
    >>> clf("photo.jpg")["top_k"][0]            # {"class_id", "label", "score"}
    >>> det = va.pipeline("object-detection", model="runs/finetune_coco/version_0")
    >>> det(["a.jpg", pil_image, tensor])       # one record per image, in order

``model`` is a registered name (``NAME[.TAG]``, ``hf-hub:org/repo``: its published weights), a run folder
(``runs/NAME/version_N``: its ``config.yaml`` and best checkpoint, :func:`vision_attn.run.runs.resolve_run`), a saved
folder (``model.safetensors`` + ``config.json``, :func:`vision_attn.from_pretrained`) or an exported ONNX folder
(``tools/export.py --format onnx``: run by onnxruntime, preprocessed as its ``config.json`` says). Images are paths,
PIL images or RGB tensors ``(3, H, W)`` in [0, 1] (or uint8), one or a list. Everything after loading is
:func:`vision_attn.run.predict.predict_batches`, the code of ``tools/predict.py``: the same preprocessing, batching
and records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from PIL import Image
from torch import Tensor, nn

from ..callbacks.predictions import category_map, finalize_records
from ..data.coco.transforms import detr_predict_transform
from ..data.transforms import AlbumentationsTransform, imagenet_eval_transform
from ..metrics.coco import detr_postprocess
from ..models import from_pretrained
from ..models.detr import DETR
from ..tasks import ClassificationTask, DetectionTask
from .predict import Predictor, load_predictor, predict_batches, predict_loader
from .runs import is_run_dir, resolve_run

__all__ = ["pipeline", "Pipeline", "TASKS", "OnnxTask"]

TASKS = ("image-classification", "object-detection")
ImageInput = Union[str, Path, Image.Image, Tensor]


def _runtime_transform(pre: Dict[str, Any], detection: bool):
    """An exported folder's ``preprocessing`` as the transform the datamodules use (albumentations, same code)."""
    mean, std = tuple(pre.get("mean", (0.485, 0.456, 0.406))), tuple(pre.get("std", (0.229, 0.224, 0.225)))
    if detection:
        return AlbumentationsTransform(detr_predict_transform(int(pre["short_side"]), pre.get("max_size"), mean, std))
    return imagenet_eval_transform(
        int(pre["input_size"][-1]), mean, std, pre.get("interpolation", "bilinear"), float(pre.get("crop_pct", 1.0))
    )


class _ExportedConfig(nn.Module):
    """What the labels code reads from a model (``pretrained_cfg``, ``num_classes``), for an exported file."""

    def __init__(self, config: Dict[str, Any]) -> None:
        super().__init__()
        self.num_classes = int(config["num_classes"])
        ours = (config.get("vision_attn") or {}).get(
            "pretrained_cfg"
        ) or {}  # save_pretrained keeps non-timm keys there
        self.pretrained_cfg = dict(config.get("pretrained_cfg") or {}, **ours, label_names=config.get("label_names"))


class OnnxTask:
    """An exported ONNX folder behind the tasks' ``predict_step``: onnxruntime on the CPU, the same outputs.

    Classification: ``pixel_values (B, 3, H, W)`` -> softmax of ``logits``. Detection: the batch is zero-padded to
    the exported size (``pixel_mask`` True there) and ``logits``, ``pred_boxes`` go through DETR's post-processing.
    """

    def __init__(self, folder: Path, config: Dict[str, Any]) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(
                f"running {folder}/model.onnx needs onnxruntime: pip install 'vision_attn[export]' ({e})"
            ) from None
        self.session = ort.InferenceSession(
            str(folder / config.get("file", "model.onnx")), providers=["CPUExecutionProvider"]
        )
        self.detection = config.get("task") == "object-detection"
        self.num_classes = int(config["num_classes"])
        self.model = _ExportedConfig(config)
        self.transform = _runtime_transform(config.get("preprocessing") or {}, self.detection)
        self.input_hw = tuple(int(x) for x in self.session.get_inputs()[0].shape[-2:])

    def to(self, device: Any) -> OnnxTask:
        return self

    def eval(self) -> OnnxTask:
        return self

    def _padded(self, images: Tensor, mask: Tensor):
        H, W = self.input_hw
        h, w = images.shape[-2:]
        if h > H or w > W:
            raise ValueError(
                f"this exported DETR takes images up to {H}x{W} after resizing; got {h}x{w} "
                "(export again from a config whose val_size/max_size cover it)"
            )
        out = images.new_zeros(images.shape[0], 3, H, W)
        out[:, :, :h, :w] = images
        pad = torch.ones(images.shape[0], H, W, dtype=torch.bool)
        pad[:, :h, :w] = mask
        return out, pad

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        """As :meth:`ClassificationTask.predict_step` / :meth:`DetectionTask.predict_step` on a file batch."""
        images = batch[0]
        if not self.detection:
            if images is None:
                return torch.zeros(0, self.num_classes)
            (logits,) = self.session.run(["logits"], {"pixel_values": images.cpu().numpy()})
            return torch.from_numpy(logits).softmax(-1)
        targets = [t for t in batch[-1] if "error" not in t]
        if images is None:
            return []
        pixels, mask = self._padded(images.cpu(), batch[1].cpu())
        logits, boxes = self.session.run(
            ["logits", "pred_boxes"], {"pixel_values": pixels.numpy(), "pixel_mask": mask.numpy()}
        )
        sizes = torch.stack([torch.as_tensor(t["orig_size"]) for t in targets])
        return detr_postprocess({"pred_logits": torch.from_numpy(logits), "pred_boxes": torch.from_numpy(boxes)}, sizes)


def _onnx_predictor(folder: Path) -> Predictor:
    config = json.loads((folder / "config.json").read_text())
    task = OnnxTask(folder, config)
    names = config.get("label_names")
    if task.detection:
        labels = category_map(task.num_classes, names, None, config.get("category_ids"))
    else:
        labels = [str(n) for n in names] if names else None
    return Predictor(task, None, task.detection, labels)  # type: ignore[arg-type]


def _saved_predictor(folder: Path) -> Predictor:
    from ..callbacks.predictions import class_names_for

    net = from_pretrained(str(folder))
    task = DetectionTask(net) if isinstance(net, DETR) else ClassificationTask(net)
    detection = isinstance(task, DetectionTask)
    names = class_names_for(net, None, None, detection)
    ids = net.pretrained_cfg.get("category_ids")  # from_pretrained's models are create_model's: they have one
    labels = category_map(task.num_classes, names, None, ids) if detection else names
    return Predictor(task.eval(), None, detection, labels)


def _load(model: Union[str, Path]) -> Predictor:
    path = Path(str(model)).expanduser()
    if path.is_dir():
        if is_run_dir(path):
            config, ckpt = resolve_run(path)
            return load_predictor(config=str(config), ckpt=str(ckpt))
        if (path / "model.onnx").is_file() and (path / "config.json").is_file():
            return _onnx_predictor(path)
        if (path / "config.json").is_file():
            return _saved_predictor(path)
        raise FileNotFoundError(
            f"model folder {model}: expected a run folder (config.yaml + checkpoints/), a saved "
            "folder (config.json + model.safetensors) or an exported one (config.json + model.onnx)"
        )
    return load_predictor(model=str(model))


class Pipeline:
    """A loaded model and the task's records: ``pipe(image)`` -> one record, ``pipe([images])`` -> a list (the
    records of ``predictions.json``: classification ``{"file", "top_k": [{"class_id", "label", "score"}]}``,
    detection ``{"file", "width", "height", "detections": [{"bbox", "score", "category_id", "label"}]}``; ``file`` is
    None for an in-memory image)."""

    def __init__(
        self, task: str, predictor: Predictor, top_k: int = 5, threshold: float = 0.5, batch_size: Optional[int] = None
    ) -> None:
        self.task, self.predictor = task, predictor
        self.top_k, self.threshold, self.batch_size = top_k, threshold, batch_size

    def __call__(
        self,
        images: Union[ImageInput, Sequence[ImageInput]],
        top_k: Optional[int] = None,
        threshold: Optional[float] = None,
    ) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
        single = isinstance(images, (str, Path, Image.Image)) or (isinstance(images, Tensor) and images.dim() == 3)
        items = [images] if single else list(images)
        loader = predict_loader(self.predictor, items, self.batch_size)
        records = predict_batches(
            self.predictor, loader, top_k or self.top_k, self.threshold if threshold is None else threshold
        )
        out = finalize_records(records)
        return out[0] if single else out


def pipeline(
    task: str, model: Union[str, Path], *, top_k: int = 5, threshold: float = 0.5, batch_size: Optional[int] = None
) -> Pipeline:
    """A :class:`Pipeline` for ``task`` (``"image-classification"`` or ``"object-detection"``) over ``model`` (a
    registered name, a run folder, a saved folder or an exported ONNX folder; see the module docstring)."""
    if task not in TASKS:
        raise ValueError(f"pipeline task must be one of {TASKS}; got {task!r}")
    predictor = _load(model)
    if predictor.detection != (task == "object-detection"):
        found = "a detector" if predictor.detection else "a classifier"
        raise ValueError(
            f"pipeline({task!r}, model={str(model)!r}): that model is {found}; use "
            f"{'object-detection' if predictor.detection else 'image-classification'}"
        )
    return Pipeline(task, predictor, top_k, threshold, batch_size)
