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

from vision_attn.run.visualize import visualize_detections


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the YAML config of the model and data")
    p.add_argument("--ckpt", required=True, help="checkpoint path or URL")
    p.add_argument("--out", required=True, help="output folder for the PNGs")
    p.add_argument("--images", type=int, default=4, help="how many images of the split (from the first)")
    p.add_argument(
        "--queries", type=int, nargs="*", default=None, help="query indices to show (default: the --top best)"
    )
    p.add_argument("--top", type=int, default=3, help="without --queries: this many best-scoring queries")
    p.add_argument("--threshold", type=float, default=0.5, help="score threshold for the drawn detections")
    p.add_argument("--split", default="val", help="val, test or a split name")
    args, overrides = p.parse_known_args(argv)
    if not os.path.isfile(args.config):
        p.error(f"config {args.config} does not exist")
    return visualize_detections(
        args.config, args.ckpt, args.out, args.images, args.queries, args.top, args.threshold, args.split, overrides
    )


if __name__ == "__main__":
    main()
