#!/usr/bin/env python
"""Evaluate a checkpoint on a config's test split: prints a table and writes ``metrics.json``.

    python tools/eval.py --config configs/resnet18_cifar10.yaml --ckpt runs/resnet18_cifar10/version_0/checkpoints/best.ckpt
    python tools/eval.py --config configs/vit_base_p16_cifar10_finetune.yaml --ckpt vit_b16_cifar10.safetensors --output-dir out/

``--ckpt`` takes our Lightning ``.ckpt`` (EMA weights when present), our state dicts, or timm/torchvision
weights (path or URL). Extra arguments are passed to the config (``--data.init_args.root /datasets``).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vision_attn.run.cli import VisionAttnCLI  # noqa: E402


def evaluate(config: str, ckpt: str, output_dir: str, split: str = "test", overrides=()) -> dict:
    cli = VisionAttnCLI(args=["--config", config, "--trainer.logger", "false", *overrides], run=False)
    task, data, trainer = cli.model, cli.datamodule, cli.trainer
    task.load_weights(ckpt)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if hasattr(task, "run_evaluation"):
        # Tasks whose metrics are not per-batch means (COCO mAP, FID) compute them themselves and may
        # write more files (``predictions.json``) into ``out``.
        metrics = task.run_evaluation(data, trainer, split=split, output_dir=out)
    else:
        run = trainer.test if split == "test" else trainer.validate
        (results,) = run(task, datamodule=data, verbose=False)
        metrics = {k.split("/", 1)[1]: float(v) for k, v in results.items()}
    seconds = time.perf_counter() - t0
    report = {
        "config": config,
        "checkpoint": str(ckpt),
        "split": split,
        "model": task.hparams.get("model", type(task.model).__name__),
        "params": sum(p.numel() for p in task.model.parameters()),
        "eval_seconds": round(seconds, 3),
        **metrics,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    width = max(len(k) for k in report)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in report.items()))
    print(f"wrote {out / 'metrics.json'}")
    return report


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the YAML config the model was trained with")
    p.add_argument("--ckpt", required=True, help="checkpoint path or URL")
    p.add_argument("--output-dir", default=None, help="where metrics.json goes (default: beside the checkpoint)")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="GAN configs: a local copy of the standard FID Inception weights (pt_inception-2015-12-05)")
    args, overrides = p.parse_known_args(argv)
    if args.inception_weights:
        overrides = [*overrides, "--model.init_args.inception_weights", args.inception_weights]
    if not os.path.isfile(args.config):
        p.error(f"config {args.config} does not exist")
    out = args.output_dir or (os.path.dirname(args.ckpt) if os.path.exists(args.ckpt) else ".")
    return evaluate(args.config, args.ckpt, out, args.split, overrides)


if __name__ == "__main__":
    main()
