#!/usr/bin/env python
"""Draw a DETR's detections and its decoder cross-attention maps as PNGs.

    python tools/visualize.py --config configs/detr_shapes.yaml --ckpt runs/detr_shapes/version_0/checkpoints/best.ckpt --out vis/
    python tools/visualize.py --config configs/detr_r50_coco.yaml --ckpt https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth --images 2 --queries 5 17 --out vis/

For each of the first ``--images`` images of the split it writes ``<image_id>_boxes.png`` (boxes scoring at least
``--threshold``, with class names and scores) and ``<image_id>_attention.png``: for each chosen query (default:
the ``--top`` best-scoring ones), the last decoder layer's cross-attention over the feature grid (mean over heads,
recorded with ``vision_attn.capture_attention``) over the image, with that query's box. Extra arguments go to the
config (``--data.init_args.root /datasets/coco``).
"""
import argparse
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vision_attn.attention.capture import capture_attention  # noqa: E402
from vision_attn.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from vision_attn.ops.boxes import box_cxcywh_to_xyxy  # noqa: E402
from vision_attn.run.cli import VisionAttnCLI  # noqa: E402


def last_cross_attention(maps: dict) -> torch.Tensor:
    """The ``(B, H, Q, h*w)`` map of the last decoder layer's cross-attention (``...decoder.layers.N.multihead_attn``)."""
    found = [(int(m.group(1)), name) for name in maps if (m := re.search(r"decoder\.layers\.(\d+)\.multihead_attn$", name))]
    if not found:
        raise RuntimeError(f"no decoder cross-attention among the captured modules: {sorted(maps)[:8]} ...")
    return maps[max(found)[1]]


def _image_rgb(x: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` ImageNet-normalised -> HWC float in [0, 1]."""
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def _draw_box(ax, box, color, text=None) -> None:
    x0, y0, x1, y1 = box
    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=2))
    if text:
        ax.text(x0, y0, text, color="white", fontsize=8, va="bottom", bbox=dict(facecolor=color, alpha=0.7, pad=1, edgecolor="none"))


def visualize(config, ckpt, out_dir, num_images=4, queries=None, top=3, threshold=0.5, split="val", overrides=()) -> list:
    cli = VisionAttnCLI(args=["--config", config, "--trainer.logger", "false", *overrides], run=False)
    task, dm = cli.model, cli.datamodule
    task.load_weights(ckpt)
    model = task.model.eval()
    ds = dm.dataset(dm.split_name(split))
    names = dm.classes
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colors = plt.get_cmap("tab10")
    written = []
    for i in range(min(num_images, len(ds))):
        image, target = ds[i]
        with torch.no_grad(), capture_attention(model) as maps:
            pred = model(image[None])
        prob = pred["pred_logits"][0].softmax(-1)[:, :-1]
        scores, labels = prob.max(-1)
        h, w = image.shape[-2:]
        boxes = (box_cxcywh_to_xyxy(pred["pred_boxes"][0]) * torch.tensor([w, h, w, h])).numpy()
        rgb, image_id = _image_rgb(image), target["image_id"]

        fig, ax = plt.subplots(figsize=(5, 5 * h / w))
        ax.imshow(rgb)
        for q in torch.nonzero(scores >= threshold).flatten().tolist():
            lab = int(labels[q])
            _draw_box(ax, boxes[q], colors(lab % 10), f"{names[lab] or lab} {scores[q]:.2f}")
        ax.set_title(f"image {image_id}: {int((scores >= threshold).sum())} detections >= {threshold}")
        ax.axis("off")
        path = out / f"{image_id}_boxes.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

        attn = last_cross_attention(maps)[0].float().mean(0)  # (Q, h*w), mean over heads
        fh, fw = model.feature_size(h, w)
        chosen = list(queries) if queries else scores.argsort(descending=True)[:top].tolist()
        bad = [q for q in chosen if not 0 <= q < attn.shape[0]]
        if bad:
            raise SystemExit(f"--queries {bad} out of range: the model has {attn.shape[0]} queries")
        fig, axes = plt.subplots(1, len(chosen), figsize=(4 * len(chosen), 4 * h / w), squeeze=False)
        for ax, q in zip(axes[0], chosen):
            grid = attn[q].reshape(1, 1, fh, fw)
            up = F.interpolate(grid, size=(fh * model.backbone.stride, fw * model.backbone.stride), mode="bilinear", align_corners=False)[0, 0, :h, :w]
            ax.imshow(rgb)
            ax.imshow(up.numpy(), cmap="inferno", alpha=0.6)
            lab = int(labels[q])
            _draw_box(ax, boxes[q], colors(lab % 10), f"q{q}: {names[lab] or lab} {scores[q]:.2f}")
            ax.axis("off")
        fig.suptitle(f"image {image_id}: last decoder layer cross-attention (mean over heads)")
        path = out / f"{image_id}_attention.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    print("\n".join(str(p) for p in written))
    return written


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the YAML config of the model and data")
    p.add_argument("--ckpt", required=True, help="checkpoint path or URL")
    p.add_argument("--out", required=True, help="output folder for the PNGs")
    p.add_argument("--images", type=int, default=4, help="how many images of the split (from the first)")
    p.add_argument("--queries", type=int, nargs="*", default=None, help="query indices to show (default: the --top best)")
    p.add_argument("--top", type=int, default=3, help="without --queries: this many best-scoring queries")
    p.add_argument("--threshold", type=float, default=0.5, help="score threshold for the drawn detections")
    p.add_argument("--split", default="val", help="val, test or a split name")
    args, overrides = p.parse_known_args(argv)
    if not os.path.isfile(args.config):
        p.error(f"config {args.config} does not exist")
    return visualize(args.config, args.ckpt, args.out, args.images, args.queries, args.top, args.threshold, args.split, overrides)


if __name__ == "__main__":
    main()
