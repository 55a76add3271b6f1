"""Floor 4: Lightning callbacks (sample grids, sweep results, guards). May import models and below, not tasks or run."""

from .checkpoint import AtomicCheckpointIO, CheckpointWriteError, ResumeState, RunCheckpoint, default_callbacks
from .guards import NonFiniteError, NonFiniteGuard
from .progress import LogLines, StepBar, default_progress_callbacks
from .sample_grids import SampleGrids, save_image_grid
from .throughput import Throughput

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointWriteError",
    "NonFiniteError",
    "NonFiniteGuard",
    "ResumeState",
    "RunCheckpoint",
    "SampleGrids",
    "Throughput",
    "default_callbacks",
    "save_image_grid",
    "LogLines",
    "StepBar",
    "default_progress_callbacks",
]
