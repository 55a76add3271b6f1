"""Guards that keep a diverged run from training on, or from being saved: :class:`NonFiniteGuard`."""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from ..models.protocols import conforms
from .protocols import NamesLossTerms

__all__ = ["NonFiniteError", "NonFiniteGuard", "first_nonfinite"]

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
    """A loss, a gradient norm or the weights became NaN or infinite."""


def first_nonfinite(tensors: Mapping[str, Any]) -> Tuple[Optional[str], int, int]:
    """``(name of the first non-finite floating tensor or None, how many are non-finite, how many were checked)``."""
    first, bad, n = None, 0, 0
    for name, t in tensors.items():
        if isinstance(t, Tensor) and t.is_floating_point():
            n += 1
            if not bool(torch.isfinite(t).all()):
                bad += 1
                first = first or name
    return first, bad, n


def _value(t: Tensor) -> str:
    """The first non-finite entry of ``t`` as text (``nan``, ``inf``, ``-inf``)."""
    flat = t.detach().float().flatten()
    return f"{float(flat[~torch.isfinite(flat)][0]):g}"


class NonFiniteGuard(Callback):
    """Stop the fit at the first non-finite loss or gradient norm, and refuse to save non-finite weights.

    The message names the step and the loss term, e.g. ``step 6: train/loss_giou is nan``. Tasks name their loss terms
    in ``loss_terms`` (a dict ``{"train/loss_ce": tensor, ...}``, set in each training step); otherwise the term is
    called ``loss``.

    Args:
        skip_nonfinite: instead of stopping, skip up to this many optimizer steps whose gradients are non-finite (their
            gradients are dropped, so the weights and optimizer state stay as they were); the next one stops the fit.
            0 (default) stops at the first.

    With ``16-mixed`` precision the gradient scaler already skips steps with overflowing gradients, so only the loss
    is checked there. A checkpoint is never written when any weight is non-finite (``on_save_checkpoint`` raises).
    """

    def __init__(self, skip_nonfinite: int = 0) -> None:
        if skip_nonfinite < 0:
            raise ValueError(f"skip_nonfinite must be >= 0; got {skip_nonfinite}")
        self.skip_nonfinite = int(skip_nonfinite)
        self.skipped = 0
        self._bad_loss: Optional[str] = None

    # --- loss ---------------------------------------------------------------------------------
    def _name_of(self, pl_module: pl.LightningModule, loss: Tensor) -> str:
        terms: Dict[str, Tensor] = pl_module.loss_terms if conforms(pl_module, NamesLossTerms) else {}
        bad = [k for k, v in terms.items() if isinstance(v, Tensor) and not bool(torch.isfinite(v.detach()).all())]
        same = [k for k, v in terms.items() if v is loss]
        # a component names the cause better than the sum it poisoned
        parts = [k for k in bad if k not in same]
        return (parts or bad or same or ["loss"])[0]

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        message = f"step {trainer.global_step}: {self._name_of(pl_module, loss)} is {_value(loss)}"
        if not self.skip_nonfinite:
            raise NonFiniteError(message)
        self._bad_loss = message  # its gradients are non-finite too: on_before_optimizer_step skips the step

    # --- gradients ----------------------------------------------------------------------------
    @staticmethod
    def _grads(optimizer: torch.optim.Optimizer) -> Iterable[Tensor]:
        return [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        # Lightning's MixedPrecision and FSDPPrecision both hold the GradScaler: no public type covers both
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # fp16: the GradScaler skips overflowing steps itself
        grads = self._grads(optimizer)
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False)
        if math.isfinite(float(norm)):
            self._bad_loss = None
            return
        message = self._bad_loss or f"step {trainer.global_step}: gradient norm is {float(norm):g}"
        self._bad_loss = None
        if self.skipped >= self.skip_nonfinite:
            extra = (
                f" (after skipping {self.skipped} steps, the limit skip_nonfinite={self.skip_nonfinite})"
                if self.skipped
                else ""
            )
            raise NonFiniteError(message + extra)
        self.skipped += 1
        for group in optimizer.param_groups:  # a step without gradients leaves weights and optimizer state untouched
            for p in group["params"]:
                p.grad = None
        log.warning("%s: step skipped (%d of %d allowed)", message, self.skipped, self.skip_nonfinite)

    # --- checkpoints --------------------------------------------------------------------------
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: Dict[str, Any]
    ) -> None:
        name, bad, n = first_nonfinite(checkpoint.get("state_dict", {}))
        if bad:
            raise NonFiniteError(
                f"step {trainer.global_step}: refusing to save a checkpoint: {bad} of {n} weight tensors are non-finite "
                f"(first: {name})"
            )

    def state_dict(self) -> Dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
