"""Checkpoints a run can resume from exactly: atomic writes, ``best.ckpt``/``last.ckpt``, and every RNG's state.

- :class:`AtomicCheckpointIO` writes beside the target, fsyncs and renames, whatever ``TMPDIR`` is: a kill or a full disk
  leaves the previous file intact.
- :class:`RunCheckpoint` keeps ``best.ckpt`` (by the task's ``checkpoint_monitor``, or the latest weights when the task
  has none) and ``last.ckpt``; a fit that never validated still ends with a ``best.ckpt`` (its final weights).
- :class:`ResumeState` saves the Python, NumPy and torch (CPU and CUDA) generators (and the training sampler's seed)
  with each checkpoint and restores them when a fit resumes, just before the resumed epoch's data iterator is made,
  which starts after the batches the checkpoint had trained on. The training loaders' order and augmentations depend
  on (seed, epoch, image) only (``vision_attn.data.resumable``), so a fit resumed from any ``last.ckpt``, mid-epoch
  ones included (``RunCheckpoint(last_every_n_batches=N)``), replays the same batches, mixups and dropout as an
  uninterrupted one (docs/resuming.md).
"""

from __future__ import annotations

import os
import pickle
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_info

from ..data.resumable import ResumableSampler
from ..models.checkpoint import CheckpointError, check_zip_records
from .guards import NonFiniteGuard

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointWriteError",
    "RunCheckpoint",
    "ResumeState",
    "collect_rng_states",
    "set_rng_states",
    "remove_stale_temporary_files",
    "read_lightning_checkpoint",
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


def read_lightning_checkpoint(path: _PATH, map_location: Optional[Any] = None, mmap: bool = False) -> Dict[str, Any]:
    """A Lightning checkpoint read weights-only; a missing or truncated file, pickled code, a compressed record
    (checked before inflating) or a file that is not a Lightning checkpoint is a one-line :class:`CheckpointError`
    naming the file. ``mmap=True`` leaves the tensors on disk (a cheap check before a run writes anything)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a .ckpt file a fit wrote)")
    check_zip_records(path)
    try:
        checkpoint = torch.load(path, map_location=map_location or "cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused to load: it holds pickled code or objects other than tensors and plain "
            "containers; nothing in it was executed"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        first = f"{type(e).__name__}: {first}" if isinstance(e, (KeyError, IndexError, TypeError)) else first
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({first})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint (expected a dict with a state_dict; for weights "
            "alone use the task's pretrained= option)"
        )
    return checkpoint


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
            why = (err.strerror if isinstance(err, OSError) else None) or str(err) or type(err).__name__
            kept = f"the previous {path.name} is unchanged" if path.exists() else "no file was written"
            raise CheckpointWriteError(f"could not write checkpoint {path}: {why}; {kept}") from err
        _fsync_dir(path.parent)

    def load_checkpoint(
        self, path: _PATH, map_location: Optional[Any] = None, weights_only: Optional[bool] = None
    ) -> Dict[str, Any]:
        """Lightning's reader, weights-only, with one-line errors (:func:`read_lightning_checkpoint`)."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        return read_lightning_checkpoint(path, map_location)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


def remove_stale_temporary_files(folder: _PATH) -> List[Path]:
    """Delete the ``.<name>.<pid>.tmp`` files :class:`AtomicCheckpointIO` left in ``folder`` when a process was killed
    mid-write (their process is gone); returns them. Files of running processes, and anything else, are kept."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp") if os.path.isdir(folder) else []:
        pid = tmp.name[: -len(".tmp")].rpartition(".")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    if removed:
        rank_zero_info(f"removed {len(removed)} temporary checkpoint file(s) a killed run left in {folder}")
    return removed


class RunCheckpoint(ModelCheckpoint):
    """``best.ckpt`` and ``last.ckpt`` in the run's ``checkpoints/`` folder (``<default_root_dir>/version_N/``).

    Args:
        monitor, mode: the logged number that picks ``best.ckpt``; None keeps the latest weights as ``best.ckpt``
            (GANs: nothing validates them).
        dirpath: the folder; None = the first logger's ``version_N/checkpoints`` (the same on every DDP process).

    At the end of a fit, ``best.ckpt`` holds the final weights if no validation ever picked one (e.g. a run shorter
    than one validation interval), and ``last.ckpt`` is brought up to the final step.
    """

    def __init__(
        self,
        monitor: Optional[str] = None,
        mode: str = "max",
        dirpath: Optional[_PATH] = None,
        last_every_n_batches: int = 0,
        **kwargs: Any,
    ) -> None:
        if last_every_n_batches < 0:
            raise ValueError(f"RunCheckpoint: last_every_n_batches must be >= 0; got {last_every_n_batches}")
        kwargs.setdefault("save_top_k", 1)
        super().__init__(
            dirpath=dirpath,
            filename="best",
            monitor=monitor,
            mode=mode,
            save_last=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
            **kwargs,
        )
        self.last_every_n_batches = int(last_every_n_batches)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath is not None:
            remove_stale_temporary_files(self.dirpath)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n, done = self.last_every_n_batches, trainer.fit_loop.epoch_loop.batch_progress.total.processed
        if not n or done % n or trainer.sanity_checking or self._last_global_step_saved == trainer.global_step:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
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
        "numpy": {
            "kind": kind,
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
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


def _train_samplers(trainer: pl.Trainer) -> List[Any]:
    """The :class:`~vision_attn.data.resumable.ResumableSampler` of each training loader (others have none)."""
    loaders = getattr(trainer.fit_loop, "_combined_loader", None)  # private: no public handle on the fit's loaders
    found = []
    for dl in loaders.flattened if loaders is not None else []:
        sampler = getattr(dl, "sampler", None)  # a loader may be any iterable, not only a DataLoader
        if isinstance(sampler, ResumableSampler):
            found.append(sampler)
    return found


def _batches_done(trainer: pl.Trainer) -> int:
    """Batches of the resumed epoch its checkpoint had trained on (0 when it was saved at an epoch's end)."""
    cur = trainer.fit_loop.epoch_loop.batch_progress.current
    done = cur.processed if cur.completed == cur.processed - 1 else cur.completed  # saved in on_train_batch_end
    return 0 if done >= trainer.num_training_batches else int(done)


class ResumeState(Callback):
    """Save every RNG (and the training samplers' seeds) with each checkpoint; on resume, restore them just before the
    resumed epoch's data is drawn, and start that epoch's loader after the batches the checkpoint had trained on.

    Exact from any checkpoint, mid-epoch ones included, when the training loaders use
    :class:`~vision_attn.data.resumable.ResumableSampler` (every datamodule of ``vision_attn.data`` does): their order
    and augmentations depend on (seed, epoch, image) only, and the step's own randomness on the generators saved here.
    A loader without it resumes exactly from epoch-end checkpoints only (Lightning restarts its epoch from the start).
    Under DDP every process restores process 0's generators (all draw the same main-process streams when seeded alike).
    """

    def __init__(self) -> None:
        self._pending: Optional[Dict[str, Any]] = None
        self._trainer: Optional[pl.Trainer] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> Dict[str, Any]:
        samplers = _train_samplers(self._trainer) if self._trainer is not None else []
        return {"rng": collect_rng_states(), "samplers": [s.state_dict() for s in samplers]}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        if pending.get("rng") is not None:
            set_rng_states(pending["rng"])
        # Lightning made the resumed epoch's iterator already (before our restore, and before setting the sampler's
        # epoch): make it again, as an uninterrupted run does at the start of each epoch, minus the batches trained.
        fit_loop = trainer.fit_loop
        # private: Lightning has no public handle on the fit's loaders and fetcher (None before the first epoch)
        loaders, fetcher = getattr(fit_loop, "_combined_loader", None), getattr(fit_loop, "_data_fetcher", None)
        if loaders is None or fetcher is None:
            return
        from lightning_fabric.utilities.data import _set_sampler_epoch

        samplers, done = _train_samplers(trainer), _batches_done(trainer)
        if samplers and len(samplers) == len(loaders.flattened):  # Lightning cannot see that these loaders resume
            warnings.filterwarnings(
                "ignore", message="You're resuming from a checkpoint that ended before the epoch ended"
            )
        for sampler, state in zip(samplers, pending.get("samplers") or []):
            sampler.load_state_dict(state)
        for dl in loaders.flattened:
            _set_sampler_epoch(dl, fit_loop.epoch_progress.current.processed)
            if isinstance(getattr(dl, "sampler", None), ResumableSampler) and done:  # dl: any iterable
                dl.sampler.skip(done * int(dl.batch_size or 1))
        iter(fetcher)


def default_callbacks(trainer: Optional[pl.Trainer]) -> List[Callback]:
    """The guards every task runs with (:class:`NonFiniteGuard`, :class:`ResumeState`), minus those the trainer has.

    For ``LightningModule.configure_callbacks``: Lightning lets those replace the trainer's callbacks of the same
    type, so a user's own (e.g. ``NonFiniteGuard(skip_nonfinite=5)`` in ``trainer.callbacks``) must be left out.
    """
    have = list(trainer.callbacks) if trainer is not None else []
    return [cls() for cls in (NonFiniteGuard, ResumeState) if not any(isinstance(c, cls) for c in have)]
