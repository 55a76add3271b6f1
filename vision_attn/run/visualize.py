"""Draw a DETR's detections and its last decoder layer's cross-attention for the first images of a split."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import torch

from ..attention.capture import capture_attention
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..ops.boxes import box_cxcywh_to_xyxy
from .cli import load_task
from .viz.boxes import last_cross_attention, plot_detections, plot_query_attention
from .viz.style import to_display_rgb

__all__ = ["visualize_detections"]


def visualize_detections(
    config: str,
    ckpt: str,
    out_dir: str,
    num_images: int = 4,
    queries: Optional[Sequence[int]] = None,
    top: int = 3,
    threshold: float = 0.5,
    split: str = "val",
    overrides: Sequence[str] = (),
) -> List[Path]:
    """Write ``<image_id>_boxes.png`` and ``<image_id>_attention.png`` per image; returns the paths written."""
    task, dm, _ = load_task(config, ckpt, overrides)
    model = task.model.eval()
    ds = dm.dataset(dm.split_name(split))
    names = dm.classes
    out = Path(out_dir).expanduser()
    written: List[Path] = []
    for i in range(min(num_images, len(ds))):
        image, target = ds[i]
        with torch.no_grad(), capture_attention(model) as maps:
            pred = model(image[None])
        prob = pred["pred_logits"][0].softmax(-1)[:, :-1]
        scores, labels = prob.max(-1)
        h, w = image.shape[-2:]
        boxes = box_cxcywh_to_xyxy(pred["pred_boxes"][0]) * torch.tensor([w, h, w, h])
        rgb, image_id = to_display_rgb(image, IMAGENET_MEAN, IMAGENET_STD), target["image_id"]
        keep = torch.nonzero(scores >= threshold).flatten().tolist()
        written.append(
            plot_detections(
                rgb,
                boxes[keep],
                labels[keep].tolist(),
                scores[keep].tolist(),
                names,
                out / f"{image_id}_boxes.png",
                f"image {image_id}: {len(keep)} detections >= {threshold}",
            )
        )
        attn = last_cross_attention(maps)[0].float().mean(0)  # (Q, h*w), mean over heads
        chosen = list(queries) if queries else scores.argsort(descending=True)[:top].tolist()
        bad = [q for q in chosen if not 0 <= q < attn.shape[0]]
        if bad:
            raise SystemExit(f"--queries {bad} out of range: the model has {attn.shape[0]} queries")
        written.append(
            plot_query_attention(
                rgb,
                attn,
                model.feature_size(h, w),
                model.backbone.stride,
                chosen,
                boxes,
                labels.tolist(),
                scores.tolist(),
                names,
                out / f"{image_id}_attention.png",
                f"image {image_id}: last decoder layer cross-attention (mean over heads)",
            )
        )
    print("\n".join(str(p) for p in written))
    return written
