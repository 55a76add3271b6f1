"""Floor 4: LightningModules, the only place Lightning trains."""
from .classification import ClassificationTask

__all__ = ["ClassificationTask"]
