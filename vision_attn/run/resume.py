"""Finding the run that ``fit --ckpt_path last`` continues, and loggers that continue its files."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

__all__ = ["NothingToResumeError", "Resume", "find_last_checkpoint", "ResumableCSVLogger"]


class NothingToResumeError(FileNotFoundError):
    """``--ckpt_path last`` found no ``last.ckpt`` to continue from."""


@dataclass(frozen=True)
class Resume:
    """What a resumed fit continues: the checkpoint, its run's ``version_N`` (None: not in a version folder) and the
    logging step it was saved at (rows logged after it, by the killed run, are dropped)."""

    ckpt: Path
    version: Optional[int]
    step: Optional[int]


def _logged_steps(ckpt: Path) -> Optional[int]:
    """The first logging step of a fit resumed from ``ckpt`` (rows from it on were logged by the killed run after its
    checkpoint), read without loading its tensors: Lightning's ``_batches_that_stepped``, plus one when the
    checkpoint was saved at a batch's end (that batch's row is logged after the save, and Lightning resumes one on)."""
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        loop = state["loops"]["fit_loop"]
        step = int(loop["epoch_loop.state_dict"]["_batches_that_stepped"])
    except Exception:  # an older or foreign checkpoint: keep every logged row
        return None
    total = loop.get("epoch_loop.batch_progress", {}).get("total", {})
    counts = [total.get(k) for k in ("ready", "started", "processed", "completed")]
    return step + 1 if None not in counts and len(set(counts)) > 1 else step


def find_last_checkpoint(root: str | os.PathLike, dirpaths: Sequence[str | os.PathLike] = ()) -> Resume:
    """The most recent ``last.ckpt`` of the runs under ``root`` (``version_N/checkpoints/``, or ``checkpoints/`` when
    the run had no logger); with ``dirpaths`` (a user's ``ModelCheckpoint(dirpath=...)``), the newest ``last*.ckpt``
    there instead. Raises :class:`NothingToResumeError` naming the folders searched."""
    root = Path(root).expanduser().absolute()
    found: list[tuple[Path, Optional[int]]] = []
    if dirpaths:
        found = [(p, None) for d in dirpaths for p in Path(d).expanduser().glob("last*.ckpt")]
        where = ", ".join(str(Path(d).expanduser().absolute()) for d in dirpaths)
    else:
        for folder in root.glob("version_*"):
            n = folder.name.removeprefix("version_")
            if n.isdigit() and (folder / "checkpoints" / "last.ckpt").is_file():
                found.append((folder / "checkpoints" / "last.ckpt", int(n)))
        if (root / "checkpoints" / "last.ckpt").is_file():
            found.append((root / "checkpoints" / "last.ckpt", None))
        where = f"{root}/version_*/checkpoints/"
    if not found:
        raise NothingToResumeError(f"--ckpt_path last: nothing to resume, no last.ckpt in {where}")
    path, version = max(found, key=lambda f: (f[0].stat().st_mtime, -1 if f[1] is None else f[1]))
    return Resume(path, version, _logged_steps(path))


class _ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued (its rows from ``keep_before_step`` on are
    dropped: the killed run logged them after its last checkpoint) instead of deleted."""

    def __init__(self, log_dir: str, keep_before_step: Optional[int]) -> None:
        self._keep_before_step = keep_before_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            reader = csv.DictReader(f)
            keys, rows = list(reader.fieldnames or []), list(reader)
        if self._keep_before_step is not None:
            rows = [r for r in rows if not r.get("step") or int(float(r["step"])) < self._keep_before_step]
        with self._fs.open(self.metrics_file_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = keys  # so new columns extend the header instead of dropping the old rows


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that continues the ``metrics.csv`` of an existing ``version`` (see :class:`_ContinuingWriter`)."""

    def __init__(self, *args, keep_before_step: Optional[int] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._keep_before_step = keep_before_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(self.log_dir, self._keep_before_step)
        return self._experiment
