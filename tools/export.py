#!/usr/bin/env python
"""Turn a training checkpoint into a shareable model folder (``model.safetensors`` + ``config.json``), a
``torch.export`` program (``model.pt2``) or ONNX (``model.onnx``), both with a dynamic batch axis.

    python tools/export.py --config configs/quickstart.yaml --ckpt runs/quickstart/version_0/checkpoints/best.ckpt --output out/my-vit
    python tools/export.py --config configs/detr_shapes.yaml --ckpt best.ckpt --output out/detr --format onnx
    python tools/export.py --run runs/finetune_folder/version_0 --format onnx     # -> version_0/export_onnx/

The folder holds the run's weights (its EMA weights when it kept them), the class names and the data's
preprocessing; ``vision_attn.from_pretrained("out/my-vit")`` rebuilds the model, ``model.push_to_hub("org/name")``
shares it. ONNX and program folders carry ``config.json`` too (class names, preprocessing, input/output names:
``pixel_values`` -> ``logits``; DETR ``pixel_values``, ``pixel_mask`` -> ``logits``, ``pred_boxes``), and
``vision_attn.pipeline(task, model=FOLDER)`` runs them. Extra arguments are passed to the config (``--data.init_args.root /datasets``).
"""

import argparse
import os

from vision_attn.run.export import FORMATS, export
from vision_attn.run.runs import resolve_run, run_output_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--run",
        default=None,
        metavar="DIR",
        help="a run folder (runs/NAME/version_N): its config.yaml and "
        "best checkpoint; the folder goes to DIR/export_<format>/ unless --output",
    )
    p.add_argument(
        "--config", default=None, help="the YAML config the model was trained with (a run's config.yaml too)"
    )
    p.add_argument("--ckpt", default=None, help="the training checkpoint (.ckpt) or weights file")
    p.add_argument("--output", default=None, help="the folder to write")
    p.add_argument(
        "--format",
        choices=sorted(FORMATS),
        default="safetensors",
        help="what to write (default: safetensors); onnx needs the [export] extra (DETR: inputs images and padding "
        "mask; a GAN: its generator with z and labels)",
    )
    args, overrides = p.parse_known_args(argv)
    if args.run:
        if args.config or args.ckpt:
            p.error("--run DIR takes its config and checkpoint from DIR: drop --config/--ckpt (or drop --run)")
        try:
            config_path, ckpt_path = resolve_run(args.run)
        except FileNotFoundError as err:
            p.error(str(err))
        args.config, args.ckpt = str(config_path), str(ckpt_path)
        args.output = args.output or str(run_output_dir(args.run, f"export_{args.format}"))
    elif not args.config or not args.ckpt or not args.output:
        p.error("give --run DIR, or --config CFG, --ckpt CKPT and --output DIR")
    config, ckpt = os.path.expanduser(args.config), os.path.expanduser(args.ckpt)
    if not os.path.isfile(config):
        p.error(f"config {args.config} does not exist")
    if not os.path.isfile(ckpt):
        p.error(f"checkpoint {args.ckpt} does not exist")
    return export(config, ckpt, os.path.expanduser(args.output), args.format, overrides)


if __name__ == "__main__":
    main()
