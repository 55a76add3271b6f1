#!/usr/bin/env python
"""Run a classifier or detector on your own images: writes OUT/predictions.json (and PNGs).

    python tools/predict.py --config configs/quickstart.yaml --ckpt runs/quickstart/version_0/checkpoints/best.ckpt --input photos/ --output-dir out/
    python tools/predict.py --model vit_tiny_patch16_224.augreg_in21k_ft_in1k --input photos/ "more/*.png" --output-dir out/ --attention
    python tools/predict.py --model detr_resnet50 --input street.jpg --output-dir out/ --threshold 0.7 --attention
    python tools/predict.py --run runs/finetune_folder/version_0 --input photos/     # -> version_0/predict/

--model NAME[.TAG] takes the model's published weights, or --ckpt (ours or foreign, path or URL); --config a
training config (then --ckpt is the run's checkpoint and the images get the config's evaluation transform).
Classification: {"file", "top_k": [{"class_id", "label", "score"}]} per image. Detection: {"file", "width",
"height", "detections": [{"bbox": [x, y, w, h] in the file's pixels, "score", "category_id", "label"}]} and
<name>_boxes.png; detectors batch only images of one size, so results never depend on the other images.
--attention: <name>_attention.png (ViT rollout + last-layer class-token attention; DETR decoder attention per
detected object) or <name>_pixel_attention_<module>.png (non-local/SASA nets, at --query-pixels).
Unreadable files get {"file", "error"} and a line on stderr; the exit status is how many failed (at most 125).
Extra arguments go to the config (--data.init_args.root /datasets).
"""

import argparse
import sys

from vision_attn.data.images import MAX_PIXELS
from vision_attn.run.predict import predict
from vision_attn.run.runs import resolve_run, run_output_dir
from vision_attn.run.viz import query_pixel


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a registered model, NAME or NAME.TAG (vision_attn.list_models())")
    which.add_argument("--config", help="the YAML config the checkpoint was trained with (a run's config.yaml too)")
    which.add_argument(
        "--run",
        metavar="DIR",
        help="a run folder (runs/NAME/version_N): its config.yaml and best "
        "checkpoint; predictions go to DIR/predict/ unless --output-dir",
    )
    p.add_argument("--ckpt", default=None, help="weights: our .ckpt / state dict or foreign weights, path or URL")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="image files, folders or glob patterns")
    p.add_argument("--output-dir", default=None, help="where predictions.json and the PNGs go (required without --run)")
    p.add_argument("--top-k", type=int, default=5, help="classification: classes per image (default 5)")
    p.add_argument("--threshold", type=float, default=0.5, help="detection: lowest score kept (default 0.5)")
    p.add_argument("--attention", action="store_true", help="also draw where the model attends, as PNGs")
    p.add_argument(
        "--query-pixels",
        type=query_pixel,
        nargs="+",
        default=None,
        metavar="Y,X",
        help="pixel-attention nets: input-image pixels whose attention is drawn (default: the centre)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per batch (default: the config's, else 32; detectors 8, same-size images only)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help=f"refuse images whose header declares more pixels, before decoding (default {MAX_PIXELS})",
    )
    args, overrides = p.parse_known_args(argv)
    if args.run:
        if args.ckpt:
            p.error("--run DIR takes its checkpoint from DIR: drop --ckpt (or use --config with --ckpt)")
        try:
            config_path, ckpt_path = resolve_run(args.run)
        except FileNotFoundError as err:
            p.error(str(err))
        args.config, args.ckpt = str(config_path), str(ckpt_path)
        args.output_dir = args.output_dir or str(run_output_dir(args.run, "predict"))
    elif not args.output_dir:
        p.error("--output-dir is required (or give --run DIR)")
    if overrides and not args.config:
        p.error(f"unrecognized arguments: {' '.join(overrides)}")
    failed = predict(
        args.input,
        args.output_dir,
        args.model,
        args.config,
        args.ckpt,
        args.top_k,
        args.threshold,
        args.attention,
        args.query_pixels,
        args.batch_size,
        overrides,
        args.max_pixels,
    )
    return min(failed, 125)


if __name__ == "__main__":
    sys.exit(main())
