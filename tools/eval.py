#!/usr/bin/env python
"""Evaluate a checkpoint on a config's test split: prints a table and writes ``metrics.json``.

    python tools/eval.py --config configs/resnet18_cifar10.yaml --ckpt runs/resnet18_cifar10/version_0/checkpoints/best.ckpt
    python tools/eval.py --config configs/vit_base_p16_cifar10_finetune.yaml --ckpt vit_b16_cifar10.safetensors --output-dir out/
    python tools/eval.py --run runs/finetune_folder/version_0      # its config.yaml + best.ckpt -> version_0/eval_test/

``--ckpt`` takes our Lightning ``.ckpt`` (EMA weights when present), our state dicts, or timm/torchvision
weights (path or URL). Extra arguments are passed to the config (``--data.init_args.root /datasets``).
Detection configs also write ``predictions.json``; GAN configs compute FID/IS/KID (see ``--inception-weights``).
"""

import argparse
import os

from vision_attn.run.cli import USER_ERRORS
from vision_attn.run.evaluate import evaluate
from vision_attn.run.runs import resolve_run, run_output_dir

INCEPTION_FLAG = "--model.init_args.evaluation.inception_weights"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--run",
        default=None,
        metavar="DIR",
        help="a run folder (runs/NAME/version_N): its config.yaml and "
        "best checkpoint; metrics.json goes to DIR/eval_<split>/",
    )
    p.add_argument(
        "--config", default=None, help="the YAML config the model was trained with (a run's config.yaml too)"
    )
    p.add_argument("--ckpt", default=None, help="checkpoint path or URL")
    p.add_argument("--output-dir", default=None, help="where metrics.json goes (default: beside the checkpoint)")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument(
        "--inception-weights",
        default=None,
        metavar="PATH",
        help="GAN configs: a local copy of the standard FID Inception weights (pt_inception-2015-12-05)",
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
        args.output_dir = args.output_dir or str(run_output_dir(args.run, f"eval_{args.split}"))
    elif not args.config or not args.ckpt:
        p.error("give --run DIR, or both --config CFG and --ckpt CKPT")
    if args.inception_weights:
        overrides = [*overrides, INCEPTION_FLAG, os.path.expanduser(args.inception_weights)]
    config, ckpt = os.path.expanduser(args.config), args.ckpt if "://" in args.ckpt else os.path.expanduser(args.ckpt)
    if not os.path.isfile(config):
        p.error(f"config {args.config} does not exist")
    out = args.output_dir or (os.path.dirname(ckpt) if os.path.exists(ckpt) else ".")
    try:
        return evaluate(config, ckpt, out, args.split, overrides)
    except USER_ERRORS as err:  # one line naming the problem, not a traceback
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
