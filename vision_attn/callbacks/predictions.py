"""``predictions.json``: what a task's ``predict_step`` returns for a batch of image files, as JSON records.

The same functions format ``tools/predict.py`` (:mod:`vision_attn.run.predict`) and ``tools/train.py predict``
(:class:`PredictionWriter`), so both write the same file. It is a list with one object per input file, in input
order:

- classification: ``{"file", "top_k": [{"class_id", "label", "score"}, ...]}`` (softmax scores, descending);
- detection: ``{"file", "width", "height", "detections": [{"bbox": [x, y, w, h], "score", "category_id",
  "label"}, ...]}`` (boxes in the file's own pixels, upright; scores descending, at least the threshold;
  ``category_id`` = the training set's own id);
- a file that could not be read: ``{"file", "error"}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch.distributed as dist
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import Tensor, nn

from ..data.protocols import CategoryLabels
from ..models import class_names
from ..models.protocols import ClassifierModel, conforms
from .protocols import CarriesClassNames, WrapsModel

__all__ = [
    "PredictionWriter",
    "default_prediction_writer",
    "classification_records",
    "detection_records",
    "category_map",
    "class_names_for",
    "finalize_records",
    "write_predictions",
    "is_file_batch",
]

CategoryMap = Dict[int, Tuple[int, str]]  # label -> (category id, name); labels missing here are no category


def is_file_batch(infos: Any) -> bool:
    """Whether a batch's last element is the info list of :mod:`vision_attn.data.images` (not COCO targets)."""
    return (
        isinstance(infos, (list, tuple))
        and len(infos) > 0
        and all(isinstance(i, Mapping) and "file" in i for i in infos)
    )


def _coco91_names() -> List[str]:
    # index = COCO category id; "__background__" and "N/A" mark ids that are no category (DETR's 91-class head)
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    return [
        "" if n in ("__background__", "N/A") else n for n in FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    ]


def class_names_for(
    model: nn.Module, datamodule: Any = None, checkpoint_names: Optional[Sequence[str]] = None, detection: bool = False
) -> Optional[List[str]]:
    """Class names by label, first found of: the checkpoint's ``class_names``; the model's own
    (:func:`vision_attn.models.class_names`: its saved names, ImageNet's for ImageNet weights); the datamodule's
    ``classes``; COCO's for a 91-class detector. None: use the label ids."""
    if checkpoint_names:
        return [str(n) for n in checkpoint_names]
    names = class_names(model)
    if names:
        return names
    if datamodule is not None:
        try:
            return [str(n) for n in datamodule.classes]
        except Exception:  # a datamodule whose names need its files (CIFAR, image folders) when they are absent
            pass
    coco91 = detection and conforms(model, ClassifierModel) and model.num_classes == 91
    return _coco91_names() if coco91 else None


def _name(names: Optional[Sequence[str]], label: int) -> str:
    return str(names[label]) if names is not None and label < len(names) and names[label] else str(label)


def category_map(
    num_classes: int,
    names: Optional[Sequence[str]] = None,
    datamodule: Any = None,
    label_to_category_id: Optional[Sequence[int]] = None,
) -> CategoryMap:
    """Label -> ``(category id, name)`` for a detector. With a COCO datamodule: its ``label_to_category_id``, only
    labels that are categories of the data (as :meth:`DetectionTask.coco_metrics`); else a checkpoint's
    ``label_to_category_id``. Otherwise label = category id, and labels whose name is ``""`` (no category, e.g. the
    gaps in COCO's 91 ids) are left out."""
    coco = datamodule is not None and conforms(datamodule, CategoryLabels)
    if label_to_category_id is not None and not coco:
        return {lab: (int(c), _name(names, lab)) for lab, c in enumerate(label_to_category_id)}
    if coco:
        try:
            valid = set(datamodule.category_ids)
            return {
                lab: (int(c), _name(names, lab)) for lab, c in enumerate(datamodule.label_to_category_id) if c in valid
            }
        except FileNotFoundError:  # no annotation file here: fall back to label = category id
            pass
    return {
        lab: (lab, _name(names, lab))
        for lab in range(num_classes)
        if names is None or lab >= len(names) or names[lab] != ""
    }


def _error_record(info: Mapping[str, Any]) -> Dict[str, Any]:
    return {"_index": int(info["index"]), "file": info["file"], "error": info["error"]}


def classification_records(
    probs: Optional[Tensor], infos: Sequence[Mapping[str, Any]], top_k: int, names: Optional[Sequence[str]]
) -> List[Dict[str, Any]]:
    """``probs (B_ok, K)`` (softmax; rows = the readable files of ``infos``, in order) -> one record per file."""
    good = [i for i in infos if "error" not in i]
    records = [_error_record(i) for i in infos if "error" in i]
    if good:
        scores, ids = probs.detach().float().cpu().topk(min(top_k, probs.shape[-1]), dim=-1)  # sorted, descending
        for info, s, c in zip(good, scores.tolist(), ids.tolist()):
            top = [
                {"class_id": int(k), "label": _name(names, int(k)), "score": round(float(v), 6)} for v, k in zip(s, c)
            ]
            records.append({"_index": int(info["index"]), "file": info["file"], "top_k": top})
    return records


def detection_records(
    detections: Sequence[Mapping[str, Tensor]],
    infos: Sequence[Mapping[str, Any]],
    threshold: float,
    categories: CategoryMap,
) -> List[Dict[str, Any]]:
    """Per readable file, ``{"scores" (Q,), "labels" (Q,), "boxes" (Q, 4) xyxy in the file's pixels}`` (what
    ``DetectionTask.predict_step`` returns) -> one record per file; queries below ``threshold`` or of a label that
    is no category are left out."""
    good = [i for i in infos if "error" not in i]
    records = [_error_record(i) for i in infos if "error" in i]
    for info, det in zip(good, detections):
        found = []
        for score, label, (x0, y0, x1, y1) in zip(
            det["scores"].tolist(), det["labels"].tolist(), det["boxes"].float().tolist()
        ):
            if score >= threshold and int(label) in categories:
                cat, name = categories[int(label)]
                bbox = [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]
                found.append({"bbox": bbox, "score": round(float(score), 6), "category_id": cat, "label": name})
        found.sort(key=lambda d: -d["score"])
        records.append(
            {
                "_index": int(info["index"]),
                "file": info["file"],
                "width": int(info["width"]),
                "height": int(info["height"]),
                "detections": found,
            }
        )
    return records


def finalize_records(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Records in input order, without the internal index."""
    return [{k: v for k, v in r.items() if k != "_index"} for r in sorted(records, key=lambda r: r["_index"])]


def write_predictions(records: Sequence[Dict[str, Any]], path: Path) -> List[Dict[str, Any]]:
    """Write ``path`` (predictions.json) and name every unreadable file on stderr; returns the written list."""
    out = finalize_records(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    for r in out:
        if "error" in r:
            print(f"skipped {r['file']}: {r['error']}", file=sys.stderr)
    return out


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.json`` (the format above) of a ``trainer.predict`` over image files
    (``--data.init_args.predict_root``) into ``output_dir`` (default: the run's folder, ``trainer.log_dir``).

    Batches that are not image files (e.g. the COCO evaluation that ``tools/eval.py`` runs through
    ``trainer.predict``) are ignored. Under DDP every process's records are gathered and rank 0 writes.

    Args:
        output_dir: where predictions.json goes; top_k: classes per image; threshold: the lowest detection score kept.
    """

    def __init__(self, output_dir: Optional[str] = None, top_k: int = 5, threshold: float = 0.5) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.top_k, self.threshold = output_dir, int(top_k), float(threshold)
        self.records: List[Dict[str, Any]] = []
        self.path: Optional[Path] = None
        self._names: Any = None

    def on_predict_start(self, trainer, pl_module) -> None:
        self.records, self._names = [], None

    def _labels(self, trainer, pl_module, detection: bool) -> Any:
        if self._names is None:
            model = pl_module.model if conforms(pl_module, WrapsModel) else pl_module
            own = pl_module.class_names if conforms(pl_module, CarriesClassNames) else None
            names = class_names_for(model, trainer.datamodule, own, detection)
            self._names = category_map(pl_module.num_classes, names, trainer.datamodule) if detection else names
        return self._names

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        infos = batch[-1] if isinstance(batch, (list, tuple)) else None
        if not is_file_batch(infos):
            return
        if isinstance(prediction, Tensor) or prediction is None:
            self.records += classification_records(
                prediction, infos, self.top_k, self._labels(trainer, pl_module, False)
            )
        else:
            self.records += detection_records(prediction, infos, self.threshold, self._labels(trainer, pl_module, True))

    def on_predict_end(self, trainer, pl_module) -> None:
        records = self.records
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: List[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, records)
            # a distributed sampler may repeat a file to even out the processes: keep it once
            records = list({r["_index"]: r for part in parts for r in part}.values())
        if not records or trainer.global_rank != 0:
            return
        folder = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        self.path = folder / "predictions.json"
        write_predictions(records, self.path)
        print(f"wrote {self.path}")


def default_prediction_writer(trainer: Any) -> List[PredictionWriter]:
    """``[PredictionWriter()]`` for a task's ``configure_callbacks``, unless the trainer already has one (yours wins)."""
    callbacks = getattr(trainer, "callbacks", None) or []  # a Trainer, or None / a stand-in when none is attached
    return [] if any(isinstance(c, PredictionWriter) for c in callbacks) else [PredictionWriter()]
