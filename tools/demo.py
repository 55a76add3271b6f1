#!/usr/bin/env python
"""The offline quickstart behind ``make demo``: train the quickstart ViT, CNN and non-local (pixel-attention)
ResNet on the built-in synthetic shapes task on this CPU, test each best checkpoint, print a comparison table and write
``runs/demo/results.json`` as ``{"<model>": {"top1": float, "train_seconds": float, "params": int}}``.

    python tools/demo.py [--configs configs/quickstart.yaml configs/quickstart_resnet.yaml] [--output-dir runs/demo]
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vision_attn.run.cli import VisionAttnCLI  # noqa: E402

DEFAULT_CONFIGS = ["configs/quickstart.yaml", "configs/quickstart_resnet.yaml", "configs/quickstart_nonlocal.yaml"]


def run_config(config: str, root: Path, overrides=()) -> dict:
    name = Path(config).stem
    cli = VisionAttnCLI(args=["--config", config, "--trainer.default_root_dir", str(root / name), *overrides], run=False)
    task, data, trainer = cli.model, cli.datamodule, cli.trainer
    t0 = time.perf_counter()
    trainer.fit(task, datamodule=data)
    train_seconds = time.perf_counter() - t0
    (res,) = trainer.test(task, datamodule=data, ckpt_path="best", verbose=False)
    return {
        "model": task.hparams.model,
        "top1": float(res["test/top1"]),
        "top5": float(res["test/top5"]),
        "train_seconds": round(train_seconds, 1),
        "params": sum(p.numel() for p in task.model.parameters()),
        "n_train": getattr(data, "n_train", None),
        "config": config,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    p.add_argument("--output-dir", default="runs/demo")
    args, overrides = p.parse_known_args(argv)
    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    rows = [run_config(c, root, overrides) for c in args.configs]
    results = {r["model"]: {"top1": r["top1"], "train_seconds": r["train_seconds"], "params": r["params"]} for r in rows}
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n| model | params | train images | train s | test top-1 | test top-5 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['n_train']} | {r['train_seconds']:.0f} | "
              f"{100 * r['top1']:.1f}% | {100 * r['top5']:.1f}% |")
    print(f"\nwrote {root / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
