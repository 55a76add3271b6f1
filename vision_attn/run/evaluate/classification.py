"""Classification: the task's own test/validation loop (top-1, top-5 averaged over the split by torchmetrics)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

from ...tasks import ClassificationTask
from . import evaluate_task


@evaluate_task.register
def evaluate_classification(
    task: ClassificationTask, datamodule, trainer, split: str, output_dir: Path
) -> Dict[str, float]:
    run = trainer.test if split == "test" else trainer.validate
    (results,) = run(task, datamodule=datamodule, verbose=False)
    return {k.split("/", 1)[1]: float(v) for k, v in results.items()}
