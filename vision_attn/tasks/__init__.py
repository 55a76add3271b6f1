"""Floor 4: LightningModules, the only place Lightning trains."""

from .classification import ClassificationTask
from .detection import DetectionTask
from .generation import GenerationTask

__all__ = ["ClassificationTask", "DetectionTask", "GenerationTask"]
