"""Checkpoints a run can resume from exactly: atomic writes, ``best.ckpt``/``last.ckpt``, and every RNG's state.

- :class:`AtomicCheckpointIO` writes beside the target, fsyncs and renames, whatever ``TMPDIR`` is: a kill or a full disk
  leaves the previous file intact.
- :class:`RunCheckpoint` keeps ``best.ckpt`` (by the task's ``checkpoint_monitor``, or the latest weights when the task
  has none) and ``last.ckpt``; a fit that never validated still ends with a ``best.ckpt`` (its final weights).
- :class:`ResumeState` saves the Python, NumPy and torch (CPU and CUDA) generators with each checkpoint and restores
  them when a fit resumes, just before the resumed epoch's data iterator is made. Augmentations draw their randomness
  from torch's generator (see ``vision_attn.data.transforms``), loader workers are seeded from it, so a fit resumed
  from an epoch-end checkpoint replays the same shuffles, crops, flips, mixups and dropout as an uninterrupted one.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_info

from .guards import NonFiniteGuard

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointWriteError",
    "RunCheckpoint",
    "ResumeState",
    "collect_rng_states",
    "set_rng_states",
    "default_callbacks",
]



class CheckpointWriteError(OSError):
    """A checkpoint could not be written (the previous file, if any, is unchanged)."""


def _write(checkpoint: Dict[str, Any], f) -> None:
    torch.save(checkpoint, f)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not every filesystem lets a directory be opened; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO``, but a local file is written as ``.<name>.<pid>.tmp`` in the target's folder,
    flushed to disk (fsync) and renamed over the target: readers see the old file or the new one, never a torn one.
    A failed write raises :class:`CheckpointWriteError` naming the file and the reason. URLs (``s3://``...) go through
    Lightning's own writer."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: _PATH, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options; got {storage_options!r}")
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                _write(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            tmp.unlink(missing_ok=True)
            if not isinstance(err, (OSError, RuntimeError)):  # RuntimeError: torch.save's own wrapper of a failed write
                raise
            why = getattr(err, "strerror", None) or str(err) or type(err).__name__
            kept = f"the previous {path.name} is unchanged" if path.exists() else "no file was written"
            raise CheckpointWriteError(f"could not write checkpoint {path}: {why}; {kept}") from err
        _fsync_dir(path.parent)


class RunCheckpoint(ModelCheckpoint):
    """``best.ckpt`` and ``last.ckpt`` in the run's ``checkpoints/`` folder (``<default_root_dir>/version_N/``).

    Args:
        monitor, mode: the logged number that picks ``best.ckpt``; None keeps the latest weights as ``best.ckpt``
            (GANs: nothing validates them).
        dirpath: the folder; None = the first logger's ``version_N/checkpoints`` (the same on every DDP process).

    At the end of a fit, ``best.ckpt`` holds the final weights if no validation ever picked one (e.g. a run shorter
    than one validation interval), and ``last.ckpt`` is brought up to the final step.
    """

    def __init__(self, monitor: Optional[str] = None, mode: str = "max", dirpath: Optional[_PATH] = None, **kwargs: Any) -> None:
        kwargs.setdefault("save_top_k", 1)
        super().__init__(dirpath=dirpath, filename="best", monitor=monitor, mode=mode, save_last=True,
                         auto_insert_metric_name=False, enable_version_counter=False, **kwargs)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        parent = getattr(super(), "on_train_end", None)
        if parent is not None:
            parent(trainer, pl_module)
        if trainer.fast_dev_run or self.dirpath is None or trainer.global_step == 0:
            return
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        if not self.best_model_path or not self.file_exists(self.best_model_path, trainer):
            best = os.path.join(self.dirpath, f"{self.filename}{self.FILE_EXTENSION}")
            trainer.save_checkpoint(best, self.save_weights_only)
            self.best_model_path = best
            rank_zero_info(f"no validation result picked best.ckpt: saved the final weights as {best}")


# ---- RNG state ---------------------------------------------------------------------------------------------------
def collect_rng_states() -> Dict[str, Any]:
    """Every global generator's state, in types ``torch.load(weights_only=True)`` reads (tensors, ints, tuples)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    states: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()  # this process's device only (DDP: one device each)
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    """Restore what :func:`collect_rng_states` returned."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


class ResumeState(Callback):
    """Save every RNG with each checkpoint; on resume, restore them just before the resumed epoch's data is drawn.

    Exact from an epoch-end checkpoint (``last.ckpt`` of every completed epoch): the resumed fit ends with the same
    weights as an uninterrupted one with the same seed. From a mid-epoch checkpoint Lightning restarts the epoch's
    loader, so the rest of that epoch sees other batches. Under DDP every process restores process 0's generators (all
    processes draw the same main-process streams when seeded alike; loader workers add their rank).
    """

    def __init__(self) -> None:
        self._pending: Optional[Dict[str, Any]] = None

    def state_dict(self) -> Dict[str, Any]:
        return {"rng": collect_rng_states()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._pending = state_dict.get("rng")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None:
            return
        set_rng_states(self._pending)
        self._pending = None
        # Lightning made the resumed epoch's iterator already (before our restore, and before setting the sampler's
        # epoch): make it again, as an uninterrupted run does at the start of each epoch.
        fit_loop = trainer.fit_loop
        loaders, fetcher = getattr(fit_loop, "_combined_loader", None), getattr(fit_loop, "_data_fetcher", None)
        if loaders is None or fetcher is None:
            return
        from lightning_fabric.utilities.data import _set_sampler_epoch

        for dl in loaders.flattened:
            _set_sampler_epoch(dl, fit_loop.epoch_progress.current.processed)
        iter(fetcher)


def default_callbacks(trainer: Optional[pl.Trainer]) -> List[Callback]:
    """The guards every task runs with (:class:`NonFiniteGuard`, :class:`ResumeState`), minus those the trainer has.

    For ``LightningModule.configure_callbacks``: Lightning lets those replace the trainer's callbacks of the same
    type, so a user's own (e.g. ``NonFiniteGuard(skip_nonfinite=5)`` in ``trainer.callbacks``) must be left out.
    """
    have = list(trainer.callbacks) if trainer is not None else []
    return [cls() for cls in (NonFiniteGuard, ResumeState) if not any(isinstance(c, cls) for c in have)]
