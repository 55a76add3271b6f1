"""One ``evaluate()`` for every task: build the task and data from a config, load a checkpoint, compute the task's
metrics on a split, write ``metrics.json`` (and whatever the task's evaluator adds, e.g. ``predictions.json``).

The protocol is declared, not guessed: :func:`evaluate_task` is a ``functools.singledispatch`` function and each
task's evaluator registers itself for its task class (``classification.py``, ``detection.py``, ``generation.py``).
A task with no registered evaluator is an error naming its class.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Dict, Sequence, Union

import pytorch_lightning as pl

__all__ = ["evaluate", "evaluate_task"]


@functools.singledispatch
def evaluate_task(
    task: pl.LightningModule, datamodule: pl.LightningDataModule, trainer: pl.Trainer, split: str, output_dir: Path
) -> Dict[str, object]:
    """Metrics of ``task`` on ``split`` ("test" or "val") of ``datamodule``; evaluators may write files into ``output_dir``."""
    raise TypeError(
        f"no evaluator is registered for {type(task).__name__}; register one with "
        "@vision_attn.run.evaluate.evaluate_task.register"
    )


def evaluate(
    config: str, ckpt: str, output_dir: Union[str, Path], split: str = "test", overrides: Sequence[str] = ()
) -> Dict[str, object]:
    """Evaluate checkpoint ``ckpt`` (path or URL) of the model in ``config`` on ``split``; writes ``metrics.json``."""
    from ..cli import load_task
    from ..quiet import quiet_library

    task, data, trainer = load_task(config, ckpt, overrides)
    out = Path(output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with quiet_library():
        metrics = evaluate_task(task, data, trainer, split, out)
    report = {
        "config": config,
        "checkpoint": str(ckpt),
        "split": split,
        "model": task.hparams.get("model", type(task.model).__name__),
        "params": sum(p.numel() for p in task.model.parameters()),
        "eval_seconds": round(time.perf_counter() - t0, 3),
        **metrics,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    width = max(len(k) for k in report)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in report.items()))
    print(f"wrote {out / 'metrics.json'}")
    return report


from . import classification, detection, generation  # noqa: E402,F401  (each registers its evaluator)
