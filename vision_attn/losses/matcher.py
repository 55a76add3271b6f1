"""Hungarian matching of predictions to ground-truth objects (DETR, Carion et al. 2020)."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ..ops.boxes import box_cxcywh_to_xyxy, generalized_box_iou

__all__ = ["HungarianMatcher"]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets minimising a weighted matching cost.

    cost = ``cost_class`` * (-p(target class)) + ``cost_bbox`` * L1(cxcywh) + ``cost_giou`` * (-GIoU).
    Queries left unmatched are trained towards "no object". The cost matrix is computed for the whole batch
    at once and split per image, as in DETR; scipy's ``linear_sum_assignment`` solves each image.
    """

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0; at least one must be positive")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    @torch.no_grad()
    def forward(self, outputs: Dict[str, Tensor], targets: Sequence[Dict[str, Tensor]]) -> List[Tuple[Tensor, Tensor]]:
        """
        Args:
            outputs: ``pred_logits (B, Q, K + 1)`` and ``pred_boxes (B, Q, 4)`` (normalised cxcywh).
            targets: B dicts with ``labels (N_i,)`` int64 and ``boxes (N_i, 4)`` normalised cxcywh.

        Returns:
            B pairs ``(query_idx, target_idx)`` of int64 tensors of length ``min(Q, N_i)``.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        bs, num_queries = logits.shape[:2]
        for key, t in (("pred_logits", logits), ("pred_boxes", boxes)):
            bad = int((~torch.isfinite(t)).sum())
            if bad:  # scipy would only say "matrix contains invalid numeric entries"
                raise FloatingPointError(
                    f"HungarianMatcher: {key} has {bad} non-finite values of {t.numel()}: the model diverged"
                )
        if len(targets) != bs:
            raise ValueError(f"HungarianMatcher: {len(targets)} target dicts for a batch of {bs} predictions")
        prob = logits.flatten(0, 1).float().softmax(-1)  # (B*Q, K+1)
        out_bbox = boxes.flatten(0, 1).float()  # (B*Q, 4)
        tgt_ids = torch.cat([t["labels"] for t in targets]).to(logits.device)
        tgt_bbox = torch.cat([t["boxes"] for t in targets]).to(device=logits.device, dtype=torch.float32)
        sizes = [len(t["boxes"]) for t in targets]
        if tgt_ids.numel() == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in targets]
        # -p(class) approximates the negative log-likelihood and keeps the cost on the scale of the box terms
        cost_class = -prob[:, tgt_ids]
        cost_bbox = torch.cdist(out_bbox, tgt_bbox, p=1)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(out_bbox), box_cxcywh_to_xyxy(tgt_bbox))
        cost = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        cost = cost.view(bs, num_queries, -1).cpu()
        if not bool(torch.isfinite(cost).all()):
            raise FloatingPointError("HungarianMatcher: the matching cost is not finite although the predictions are")
        indices = []
        for i, c in enumerate(cost.split(sizes, -1)):
            rows, cols = linear_sum_assignment(c[i].numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    def extra_repr(self) -> str:
        return f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, cost_giou={self.cost_giou}"
