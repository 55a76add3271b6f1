"""Floor 3: models (plain nn.Modules), the registry and checkpoint loading."""
from . import cnn, vit  # noqa: F401  (registers the models)
from . import pixel_resnets  # noqa: F401  (registers the pixel-attention ResNets)
from . import detr  # noqa: F401  (registers the DETR detectors)
from . import sagan  # noqa: F401  (registers the SA-GANs)
from .checkpoint import CheckpointError, UnsafeCheckpointError, load_pretrained, load_state_dict
from .registry import UnknownModelError, create_model, is_model, list_models, register_model
from .detr import DETR, DETR_CHECKPOINT_URLS
from .sagan import SAGAN
from .vit import VisionTransformer

__all__ = [
    "create_model",
    "list_models",
    "is_model",
    "register_model",
    "UnknownModelError",
    "load_pretrained",
    "load_state_dict",
    "CheckpointError",
    "UnsafeCheckpointError",
    "VisionTransformer",
    "DETR",
    "DETR_CHECKPOINT_URLS",
    "SAGAN",
]
