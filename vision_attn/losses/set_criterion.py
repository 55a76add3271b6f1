"""DETR's set prediction loss: Hungarian matching, then class, L1 and GIoU losses on the matched pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.boxes import box_cxcywh_to_xyxy, generalized_box_iou
from .matcher import HungarianMatcher

__all__ = ["SetCriterion", "SetCriterionConfig"]

DEFAULT_WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}


@dataclass(frozen=True)
class SetCriterionConfig:
    """DETR's matcher costs and loss weights (``model.init_args.criterion`` of ``DetectionTask`` configs); the
    defaults are DETR's.

    Args:
        cost_class, cost_bbox, cost_giou: Hungarian matching costs (1, 5, 2).
        loss_ce, loss_bbox, loss_giou: loss weights in the total (1, 5, 2).
        eos_coef: weight of the "no object" class in the cross-entropy (0.1).
    """

    cost_class: float = 1.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    loss_ce: float = 1.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    eos_coef: float = 0.1

    def build(self, num_classes: int, aux_loss: bool = True) -> SetCriterion:
        """The :class:`SetCriterion` of these costs and weights for ``num_classes`` real classes."""
        matcher = HungarianMatcher(self.cost_class, self.cost_bbox, self.cost_giou)
        weights = {"loss_ce": self.loss_ce, "loss_bbox": self.loss_bbox, "loss_giou": self.loss_giou}
        return SetCriterion(num_classes, matcher, self.eos_coef, weights, aux_loss)


class SetCriterion(nn.Module):
    """The DETR loss for one batch.

    For the final decoder layer and (``aux_loss=True``) every earlier one, predictions are matched to the
    targets by ``matcher``; then
      - ``loss_ce``: cross-entropy over all queries, unmatched ones towards "no object" (class ``num_classes``)
        whose weight is ``eos_coef``;
      - ``loss_bbox``: L1 between matched normalised cxcywh boxes, summed and divided by ``num_boxes``;
      - ``loss_giou``: 1 - GIoU of matched boxes, likewise normalised.
    ``num_boxes`` is the number of target boxes in the batch, averaged over DDP processes when
    ``torch.distributed`` is initialised, and at least 1. Logged (no gradient): ``class_error`` (100 - top-1
    on matched queries, final layer) and ``cardinality_error`` (|predicted non-empty count - target count|).

    The losses are computed in float32 whatever the autocast dtype of the model outputs.

    Args:
        num_classes: object classes, without "no object".
        matcher: a :class:`HungarianMatcher` (default: costs 1 / 5 / 2).
        eos_coef: weight of the "no object" class in the cross-entropy.
        weight_dict: weight of each loss name in the total; aux copies ``loss_ce_0`` ... use the same weight.
        aux_loss: also apply the losses to ``outputs["aux_outputs"]``.
    """

    empty_weight: Tensor  # a buffer: class weights of the cross-entropy (``eos_coef`` for "no object")

    def __init__(
        self,
        num_classes: int,
        matcher: Optional[HungarianMatcher] = None,
        eos_coef: float = 0.1,
        weight_dict: Optional[Dict[str, float]] = None,
        aux_loss: bool = True,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"SetCriterion: num_classes must be >= 1; got {num_classes}")
        self.num_classes = num_classes
        self.matcher = matcher if matcher is not None else HungarianMatcher()
        self.eos_coef = eos_coef
        self.weight_dict = dict(DEFAULT_WEIGHTS if weight_dict is None else weight_dict)
        unknown = set(self.weight_dict) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(
                f"SetCriterion: unknown loss names {sorted(unknown)} in weight_dict; expected {sorted(DEFAULT_WEIGHTS)}"
            )
        self.aux_loss = aux_loss
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    # --- the losses -----------------------------------------------------------------------------
    @staticmethod
    def _matched(indices: List[Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tensor]:
        """(batch_idx, query_idx) of every matched query, concatenated over the batch."""
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        return batch_idx, torch.cat([src for src, _ in indices])

    def loss_labels(self, logits: Tensor, targets, indices, log: bool) -> Dict[str, Tensor]:
        """``logits (B, Q, K + 1)``: weighted cross-entropy; with ``log``, also ``class_error`` in percent."""
        batch_idx, query_idx = self._matched(indices)
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(logits.device)
        target_classes[batch_idx, query_idx] = matched_labels
        loss = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight.to(logits.device))
        out = {"loss_ce": loss}
        if log:
            if matched_labels.numel():
                acc = (logits[batch_idx, query_idx].argmax(-1) == matched_labels).float().mean() * 100
                out["class_error"] = (100 - acc).detach()
            else:
                out["class_error"] = logits.new_zeros(())
        return out

    @torch.no_grad()
    def loss_cardinality(self, logits: Tensor, targets) -> Dict[str, Tensor]:
        """Mean absolute error of the number of queries not predicting "no object" (a log, not a loss)."""
        counts = torch.as_tensor([len(t["labels"]) for t in targets], dtype=torch.float32, device=logits.device)
        predicted = (logits.argmax(-1) != self.num_classes).sum(1).float()
        return {"cardinality_error": F.l1_loss(predicted, counts)}

    def loss_boxes(self, boxes: Tensor, targets, indices, num_boxes: float) -> Dict[str, Tensor]:
        """``boxes (B, Q, 4)`` normalised cxcywh: L1 and 1 - GIoU over matched pairs, divided by ``num_boxes``."""
        batch_idx, query_idx = self._matched(indices)
        src = boxes[batch_idx, query_idx]
        tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(
            device=boxes.device, dtype=boxes.dtype
        )
        loss_bbox = F.l1_loss(src, tgt, reduction="none").sum() / num_boxes
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt)))
        loss_giou = (1 - giou).sum() / num_boxes
        return {"loss_bbox": loss_bbox, "loss_giou": loss_giou}

    # --- the whole criterion -------------------------------------------------------------------
    def num_boxes(self, targets: Sequence[Dict[str, Tensor]], device: torch.device) -> float:
        """Target boxes in the batch, averaged over DDP processes, at least 1."""
        n = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(n)
            n = n / dist.get_world_size()
        return max(n.item(), 1.0)

    def _layer_losses(self, out: Dict[str, Tensor], targets, num_boxes: float, log: bool) -> Dict[str, Tensor]:
        logits, boxes = out["pred_logits"].float(), out["pred_boxes"].float()
        indices = self.matcher({"pred_logits": logits, "pred_boxes": boxes}, targets)
        losses = self.loss_labels(logits, targets, indices, log)
        losses.update(self.loss_boxes(boxes, targets, indices, num_boxes))
        if log:
            losses.update(self.loss_cardinality(logits, targets))
        return losses

    def forward(self, outputs: Dict[str, Tensor], targets: Sequence[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        """
        Args:
            outputs: the model's dict: ``pred_logits (B, Q, K + 1)``, ``pred_boxes (B, Q, 4)``, optionally
                ``aux_outputs`` (list of such dicts, one per earlier decoder layer).
            targets: B dicts with ``labels (N_i,)`` int64 in [0, K) and ``boxes (N_i, 4)`` normalised cxcywh.

        Returns:
            the unweighted losses ``loss_ce``, ``loss_bbox``, ``loss_giou`` (final layer), ``loss_ce_0`` ... (aux
            layers, first layer = 0), the logs ``class_error``, ``cardinality_error``, and ``loss``: the weighted
            sum used for back-propagation.
        """
        for i, t in enumerate(targets):
            if len(t["labels"]) and (int(t["labels"].min()) < 0 or int(t["labels"].max()) >= self.num_classes):
                raise ValueError(
                    f"SetCriterion: target {i} has labels outside [0, {self.num_classes}): {t['labels'].tolist()}"
                )
        device = outputs["pred_logits"].device
        num_boxes = self.num_boxes(targets, device)
        with torch.autocast(device.type, enabled=False):  # matching and losses in float32
            losses = self._layer_losses(outputs, targets, num_boxes, log=True)
            if self.aux_loss:
                for i, aux in enumerate(outputs.get("aux_outputs", [])):
                    for k, v in self._layer_losses(aux, targets, num_boxes, log=False).items():
                        losses[f"{k}_{i}"] = v
        weighted = (
            self.weight_dict.get(k.rsplit("_", 1)[0] if k[-1].isdigit() else k, 0.0) * v
            for k, v in losses.items()
            if k.startswith("loss")
        )
        losses["loss"] = sum(weighted, torch.zeros((), device=device))
        return losses
