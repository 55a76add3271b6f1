"""Test helper importable by a submitted job (tests/ is put on its PYTHONPATH): a run that waits to be preempted."""

import os
import time
from pathlib import Path

import pytorch_lightning as pl


class PauseBeforeSecondEpoch(pl.Callback):
    """At the start of epoch 1 (epoch 0's last.ckpt is written), write ``marker`` (this process's id) and wait up to
    ``seconds`` for a signal; a run that finds ``marker`` already there does not wait."""

    def __init__(self, marker: str, seconds: float = 120.0) -> None:
        self.marker, self.seconds = marker, seconds

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1 and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            time.sleep(self.seconds)


class PauseAtBatch(pl.Callback):
    """Before training batch ``batch`` (counted over the whole fit, from 0), write ``marker`` (this process's id) and
    wait up to ``seconds`` for a kill: the latest ``last.ckpt`` is then the one a kill at that step leaves."""

    def __init__(self, marker: str, batch: int, seconds: float = 120.0) -> None:
        self.marker, self.batch, self.seconds = marker, batch, seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.fit_loop.epoch_loop.batch_progress.total.ready - 1 == self.batch and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            time.sleep(self.seconds)
