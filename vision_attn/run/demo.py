"""The offline quickstart behind ``make demo``: fit each quickstart config, test its best checkpoint, compare."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Sequence

from ..data.protocols import LabelledImages
from ..models.protocols import conforms
from .cli import VisionAttnCLI

__all__ = ["DEFAULT_CONFIGS", "run_config", "run_demo"]

DEFAULT_CONFIGS = ["configs/quickstart.yaml", "configs/quickstart_resnet.yaml", "configs/quickstart_nonlocal.yaml"]


def run_config(config: str, root: Path, overrides: Sequence[str] = ()) -> Dict[str, object]:
    """Fit ``config`` under ``root/<config stem>`` and test its best checkpoint: one row of the comparison."""
    name = Path(config).stem
    cli = VisionAttnCLI(
        args=["--config", config, "--trainer.default_root_dir", str(root / name), *overrides], run=False
    )
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
        "n_train": data.n_train if conforms(data, LabelledImages) else None,
        "config": config,
    }


def run_demo(
    configs: Sequence[str] = DEFAULT_CONFIGS, output_dir: str = "runs/demo", overrides: Sequence[str] = ()
) -> Dict[str, Dict[str, float]]:
    """Run every config, write ``output_dir/results.json`` (``{"<model>": {"top1", "train_seconds", "params"}}``),
    print a markdown comparison table, and return the results."""
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, object]] = [run_config(c, root, overrides) for c in configs]
    results = {
        r["model"]: {"top1": r["top1"], "train_seconds": r["train_seconds"], "params": r["params"]} for r in rows
    }
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n| model | params | train images | train s | test top-1 | test top-5 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['n_train']} | {r['train_seconds']:.0f} | "
            f"{100 * r['top1']:.1f}% | {100 * r['top5']:.1f}% |"
        )
    print(f"\nwrote {root / 'results.json'}")
    return results
