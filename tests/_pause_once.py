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
