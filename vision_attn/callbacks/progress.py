"""Progress a person can read: the epoch counter right under ``max_steps``, and plain lines in a non-TTY log.

Lightning's rich bar reads "Epoch 2/-2" when only ``max_steps`` bounds the fit (``max_epochs=-1``), and a bar drawn
into a file (a cluster job's log, ``| tee``) shows nothing until the end. :class:`StepBar` fixes the counter;
:class:`LogLines` prints one line every N optimizer steps when stdout is not a terminal.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, RichProgressBar, TQDMProgressBar
from pytorch_lightning.utilities import rank_zero_only

__all__ = ["StepBar", "LogLines", "default_progress_callbacks"]


class StepBar(RichProgressBar):
    """Lightning's rich progress bar whose train description is "Epoch N/LAST" only when ``max_epochs`` bounds the
    fit; under ``max_steps`` alone it reads "Epoch N, step S/MAX"."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            text = f"Epoch {current_epoch}/{trainer.max_epochs - 1}"
        elif trainer.max_steps is not None and trainer.max_steps > 0:
            text = f"Epoch {current_epoch}, step {trainer.global_step}/{trainer.max_steps}"
        else:
            text = f"Epoch {current_epoch}"
        return f"{text:{len(self.validation_description)}}"


def _fmt(metrics: Dict[str, Any]) -> str:
    parts = []
    for k, v in sorted(metrics.items()):
        try:
            parts.append(f"{k} {float(v):.4g}")
        except (TypeError, ValueError):
            continue
    return "  ".join(parts)


class LogLines(Callback):
    """One line every ``every_n_steps`` optimizer steps (``step S/MAX  epoch E  train/loss ...  T s``) and one per
    validation, on stdout, flushed: a log file follows the fit while it runs.

    Args:
        every_n_steps: the interval; None: the trainer's ``log_every_n_steps``.
    """

    def __init__(self, every_n_steps: Optional[int] = None) -> None:
        self.every_n_steps = every_n_steps
        self._t0 = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.monotonic()

    def _say(self, trainer: pl.Trainer, what: str, metrics: Dict[str, Any]) -> None:
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.estimated_stepping_batches
        print(
            f"{what} step {trainer.global_step}/{total}  epoch {trainer.current_epoch}  {_fmt(metrics)}  "
            f"{time.monotonic() - self._t0:.1f} s",
            flush=True,
        )

    @rank_zero_only
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        every = self.every_n_steps or trainer.log_every_n_steps or 50
        if trainer.global_step % every == 0 and (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            self._say(
                trainer, "train", {k: v for k, v in trainer.progress_bar_metrics.items() if k.startswith("train")}
            )

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._say(trainer, "val", {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val")})


def default_progress_callbacks(
    callbacks: list, enable_progress_bar: Optional[bool], lines: bool = True, stream: Any = None
) -> list:
    """What the CLI adds to ``callbacks``: :class:`StepBar` (unless a progress bar is given or disabled) and, with
    ``lines`` and when ``stream`` (stdout) is no terminal, :class:`LogLines` (unless one is given)."""
    stream = sys.stdout if stream is None else stream
    added = []
    has_bar = any(isinstance(c, (RichProgressBar, TQDMProgressBar)) for c in callbacks)
    if enable_progress_bar is not False and not has_bar:
        try:
            added.append(StepBar())
        except ModuleNotFoundError:  # rich is not installed: Lightning's default tqdm bar counts right
            pass
    isatty = getattr(stream, "isatty", None)  # any file-like object: a replaced sys.stdout may have no isatty
    if lines and not (callable(isatty) and isatty()) and not any(isinstance(c, LogLines) for c in callbacks):
        added.append(LogLines())
    return added
