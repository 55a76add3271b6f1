"""Detection: COCO mAP of a split (pycocotools, through :meth:`DetectionTask.coco_metrics`) and ``predictions.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Union

import pytorch_lightning as pl

from ...tasks.detection import DetectionTask
from . import evaluate_task

__all__ = ["evaluate_detection"]


@evaluate_task.register
def evaluate_detection(
    task: DetectionTask,
    datamodule: pl.LightningDataModule,
    trainer: pl.Trainer,
    split: str = "test",
    output_dir: Union[str, Path] = ".",
) -> Dict[str, float]:
    """Predict ``split`` (``"val"``/``"test"``/a split name) and return the 12 COCO numbers against the split's
    annotation file, ``images`` and ``detections``; writes ``output_dir/predictions.json`` (COCO results: original
    image ids, original category ids, ``[x, y, w, h]`` in original pixels)."""
    trainer.predict(task, dataloaders=datamodule.split_dataloader(split), return_predictions=False)
    metrics, results = task.coco_metrics(datamodule, split)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.json").write_text(json.dumps(results) + "\n")
    return {**metrics, "images": int(metrics["images"]), "detections": len(results)}
