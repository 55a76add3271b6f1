"""COCO detection metrics with pycocotools, and DETR outputs -> COCO results format.

The 12 standard numbers (:data:`COCO_METRIC_NAMES`) are what ``COCOeval.summarize()`` prints, in its order,
as fractions in [0, 1] (-1 where a size range has no ground truth).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from ..ops.boxes import box_cxcywh_to_xyxy, box_xyxy_to_xywh, scale_boxes

__all__ = ["COCO_METRIC_NAMES", "detr_postprocess", "to_coco_results", "coco_evaluate"]

COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@torch.no_grad()
def detr_postprocess(outputs: Dict[str, Tensor], target_sizes: Tensor) -> List[Dict[str, Tensor]]:
    """DETR's ``PostProcess``: per query, the best real class and its softmax score; boxes in pixels.

    Args:
        outputs: ``pred_logits (B, Q, K + 1)`` and ``pred_boxes (B, Q, 4)`` (normalised cxcywh).
        target_sizes: ``(B, 2)`` ``(height, width)`` to scale the boxes to (the ORIGINAL image size for COCO).

    Returns:
        B dicts: ``scores (Q,)``, ``labels (Q,)`` int64 in [0, K), ``boxes (Q, 4)`` absolute xyxy.
    """
    logits, boxes = outputs["pred_logits"].float(), outputs["pred_boxes"].float()
    if len(logits) != len(target_sizes):
        raise ValueError(f"detr_postprocess: {len(target_sizes)} target sizes for a batch of {len(logits)}")
    scores, labels = logits.softmax(-1)[..., :-1].max(-1)
    xyxy = scale_boxes(box_cxcywh_to_xyxy(boxes), target_sizes.to(boxes.device))
    return [{"scores": s, "labels": lab, "boxes": b} for s, lab, b in zip(scores, labels, xyxy)]


def to_coco_results(
    outputs: Dict[str, Tensor],
    targets: Sequence[Dict[str, Any]],
    label_to_category_id: Sequence[int],
    valid_category_ids: Optional[Sequence[int]] = None,
) -> List[Dict[str, Any]]:
    """Model outputs -> COCO results: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` per query.

    Args:
        outputs: ``pred_logits (B, Q, K + 1)``, ``pred_boxes (B, Q, 4)``.
        targets: B dicts with ``image_id`` (original id) and ``orig_size (2,) = (h, w)`` of the original image.
        label_to_category_id: label -> original category id.
        valid_category_ids: if given, predictions of other ids are left out (labels that are no category, as
            under DETR's ``label = category id`` convention, where COCOeval would ignore them anyway).
    """
    sizes = torch.stack([torch.as_tensor(t["orig_size"]) for t in targets])
    valid = set(valid_category_ids) if valid_category_ids is not None else None
    results = []
    for t, det in zip(targets, detr_postprocess(outputs, sizes)):
        xywh = box_xyxy_to_xywh(det["boxes"]).cpu().tolist()
        for score, label, box in zip(det["scores"].cpu().tolist(), det["labels"].cpu().tolist(), xywh):
            cat = int(label_to_category_id[label])
            if valid is not None and cat not in valid:
                continue
            results.append(
                {
                    "image_id": int(t["image_id"]),
                    "category_id": cat,
                    "bbox": [round(v, 3) for v in box],
                    "score": round(score, 5),
                }
            )
    return results


def _load_gt(ann: Union[str, os.PathLike, Any]):
    from pycocotools.coco import COCO

    if isinstance(ann, COCO):
        return ann
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann))


def coco_evaluate(
    ann: Union[str, os.PathLike, Any],
    results: Union[str, os.PathLike, List[Dict[str, Any]]],
    image_ids: Optional[Sequence[int]] = None,
    verbose: bool = False,
) -> Dict[str, float]:
    """The 12 COCO box numbers of ``results`` (a list, or a COCO results JSON file) against ``ann``.

    Args:
        ann: the instances JSON path (or a ``pycocotools.coco.COCO``).
        results: COCO results; an empty list gives all zeros.
        image_ids: evaluate these images only (default: every image of ``ann``, so an image without predictions
            counts its ground truth as missed).
        verbose: print pycocotools' summary table.
    """
    from pycocotools.cocoeval import COCOeval

    gt = _load_gt(ann)
    dets: List[Dict[str, Any]]
    if isinstance(results, (str, os.PathLike)):
        dets = json.loads(Path(results).read_text())
    else:
        dets = results
    if not dets:
        return {k: 0.0 for k in COCO_METRIC_NAMES}
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        dt = gt.loadRes(copy.deepcopy(list(dets)))  # loadRes adds keys to the dicts
        ev = COCOeval(gt, dt, iouType="bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_METRIC_NAMES, ev.stats)}
