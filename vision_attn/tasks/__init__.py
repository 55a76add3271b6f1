"""Floor 4: LightningModules, the only place Lightning trains."""
from .classification import ClassificationTask
from .detection import DetectionTask  # noqa: F401
from .generation import GenerationTask  # noqa: F401

__all__ = ["ClassificationTask"]
