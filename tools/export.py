#!/usr/bin/env python
"""Turn a training checkpoint into a shareable model folder (``model.safetensors`` + ``config.json``), a
``torch.export`` program (``model.pt2``) or ONNX (``model.onnx``), both with a dynamic batch axis.

    python tools/export.py --config configs/quickstart.yaml --ckpt runs/quickstart/version_0/checkpoints/best.ckpt --output out/my-vit
    python tools/export.py --config configs/detr_shapes.yaml --ckpt best.ckpt --output out/detr --format onnx

The folder holds the run's weights (its EMA weights when it kept them), the class names and the data's
preprocessing; ``vision_attn.from_pretrained("out/my-vit")`` rebuilds the model, ``model.push_to_hub("org/name")``
shares it. Extra arguments are passed to the config (``--data.init_args.root /datasets``).
"""
import argparse
import os

from vision_attn.run.export import FORMATS, export


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the YAML config the model was trained with")
    p.add_argument("--ckpt", required=True, help="the training checkpoint (.ckpt) or weights file")
    p.add_argument("--output", required=True, help="the folder to write")
    p.add_argument("--format", choices=sorted(FORMATS), default="safetensors", help="what to write (default: safetensors); onnx needs the [export] extra (DETR: inputs images and padding "
                   "mask; a GAN: its generator with z and labels)")
    args, overrides = p.parse_known_args(argv)
    config, ckpt = os.path.expanduser(args.config), os.path.expanduser(args.ckpt)
    if not os.path.isfile(config):
        p.error(f"config {args.config} does not exist")
    if not os.path.isfile(ckpt):
        p.error(f"checkpoint {args.ckpt} does not exist")
    return export(config, ckpt, os.path.expanduser(args.output), args.format, overrides)


if __name__ == "__main__":
    main()
