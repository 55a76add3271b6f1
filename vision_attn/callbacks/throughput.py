"""Training throughput: wall time of the training loop without validation, and the images it trained on."""

from __future__ import annotations

import time

import pytorch_lightning as pl

__all__ = ["Throughput"]


class Throughput(pl.Callback):
    """Measures a fit: ``seconds`` of training (validation excluded) and ``images`` seen by all processes.

    A batch is an image tensor ``(B, C, H, W)`` or a ``(images, ...)`` tuple/list; every process counts
    ``B x world_size`` per step. Read ``images / seconds`` after ``trainer.fit`` for images per second.
    """

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._val = 0.0
        self._t0 = 0.0
        self._v0 = 0.0

    def on_train_start(self, trainer, module):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        self.images += int(x.shape[0]) * trainer.world_size

    def on_validation_start(self, trainer, module):
        self._v0 = time.perf_counter()

    def on_validation_end(self, trainer, module):
        if self._t0:  # not the sanity check before training
            self._val += time.perf_counter() - self._v0

    def on_train_end(self, trainer, module):
        self.seconds = time.perf_counter() - self._t0 - self._val
