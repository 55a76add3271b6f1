"""Sample grids of a GAN during training: a fixed-noise PNG under ``<log_dir>/samples`` and a TensorBoard image."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Union

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor
from torchvision.utils import make_grid, save_image

from ..models.protocols import GanModel, check_protocol, conforms
from .protocols import CountsGeneratorSteps, WrapsModel

__all__ = ["SampleGrids", "grid_nrow", "save_image_grid"]


def save_image_grid(images: Tensor, path: Union[str, Path], nrow: Optional[int] = None) -> Path:
    """Save images ``(N, 3, H, W)`` in [-1, 1] as one PNG grid (``nrow`` per row; default ~square)."""
    if images.dim() != 4:
        raise ValueError(f"save_image_grid: images must be (N, 3, H, W); got {tuple(images.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    save_image((images.float().clamp(-1, 1) + 1) / 2, path, nrow=nrow, padding=2)
    return path


def grid_nrow(n: int, num_classes: int, max_classes: Optional[int] = 16) -> Optional[int]:
    """One class per column when ``n`` images cycle through ``num_classes`` evenly (and the row stays short)."""
    if num_classes and n % num_classes == 0 and (max_classes is None or num_classes <= max_classes):
        return num_classes
    return None


class SampleGrids(pl.Callback):
    """Every ``every_n_steps`` generator steps (and at the end of training) write the fixed-noise grid.

    The module must have ``.model`` with ``sample(n, truncation=, generator=)`` (a ``SAGAN``) and may count its
    generator steps in ``.g_steps`` (else ``trainer.global_step`` is used). Rank 0 writes
    ``<log_dir>/samples/step_XXXXXX.png`` and, with a TensorBoard logger, the image ``samples``.

    Args:
        every_n_steps: generator steps between grids; 0 = only at the end of training.
        n_samples: images in the grid (fixed noise from ``seed``, classes cycling).
        truncation: truncation of that noise (None = none).
        seed: seed of the noise, so every grid shows the same latents.
    """

    def __init__(
        self, every_n_steps: int = 500, n_samples: int = 64, truncation: Optional[float] = None, seed: int = 0
    ) -> None:
        if every_n_steps < 0 or n_samples < 1:
            raise ValueError(
                f"SampleGrids: every_n_steps must be >= 0 and n_samples >= 1; got {every_n_steps}, {n_samples}"
            )
        self.every_n_steps, self.n_samples, self.truncation, self.seed = every_n_steps, n_samples, truncation, seed
        self._last_step: Optional[int] = None  # with d_steps > 1 several batches share one generator step

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_protocol(pl_module, WrapsModel, "SampleGrids' module")
        check_protocol(pl_module.model, GanModel, "SampleGrids' module.model")

    @staticmethod
    def _step(trainer: pl.Trainer, pl_module: pl.LightningModule) -> int:
        return pl_module.g_steps if conforms(pl_module, CountsGeneratorSteps) else trainer.global_step

    @torch.no_grad()
    def images(self, pl_module: pl.LightningModule) -> Tensor:
        """The grid's ``n_samples`` images ``(n, 3, H, W)`` in [-1, 1] from the module's sampling generator."""
        g = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        with torch.autocast(pl_module.device.type, enabled=False):  # fp32 samples under bf16-mixed training
            return pl_module.model.sample(self.n_samples, truncation=self.truncation, generator=g)

    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Optional[Path]:
        """Write the grid for the current step (rank 0 only); returns its path there, else None."""
        step = self._step(trainer, pl_module)
        root = Path(trainer.log_dir or trainer.default_root_dir)  # a broadcast under DDP: every rank asks
        self._last_step = step
        if not trainer.is_global_zero:
            return None
        images = self.images(pl_module)
        nrow = grid_nrow(self.n_samples, int(pl_module.model.num_classes))
        path = save_image_grid(images, root / "samples" / f"step_{step:06d}.png", nrow=nrow)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                grid = make_grid((images.float().clamp(-1, 1) + 1) / 2, nrow=int(math.ceil(math.sqrt(len(images)))))
                logger.experiment.add_image("samples", grid, step)
        return path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = self._step(trainer, pl_module)
        if self.every_n_steps and step and step % self.every_n_steps == 0 and step != self._last_step:
            self.write(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.write(trainer, pl_module)
