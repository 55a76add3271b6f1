"""Floor 3: models (plain nn.Modules), the registry and checkpoint loading."""

from . import (  # noqa: F401  (registers the models)
    cnn,
    detr,  # noqa: F401  (registers the DETR detectors)
    pixel_resnets,  # noqa: F401  (registers the pixel-attention ResNets)
    sagan,  # noqa: F401  (registers the SA-GANs)
    vit,
)
from .builder import create_model, from_pretrained, validate_model_args
from .checkpoint import Checkpoint, CheckpointError, UnsafeCheckpointError, load_state_dict, read_checkpoint
from .compile import compile_in_place
from .data_config import class_names, create_eval_transform, resolve_data_config
from .detr import DETR, DETR_CHECKPOINT_URLS
from .hub import HubFileNotCachedError, PretrainedMixin, push_to_hub, save_pretrained
from .loader import adapt_input_conv, load_pretrained
from .pretrained_cfgs import PRETRAINED_CFGS
from .registry import (
    UnknownModelError,
    is_model,
    list_models,
    list_modules,
    model_entrypoint,
    register_model,
    split_model_name,
)
from .sagan import SAGAN
from .vit import VisionTransformer

__all__ = [
    "create_model",
    "validate_model_args",
    "compile_in_place",
    "list_models",
    "list_modules",
    "model_entrypoint",
    "adapt_input_conv",
    "is_model",
    "register_model",
    "split_model_name",
    "UnknownModelError",
    "PRETRAINED_CFGS",
    "resolve_data_config",
    "create_eval_transform",
    "class_names",
    "save_pretrained",
    "from_pretrained",
    "push_to_hub",
    "PretrainedMixin",
    "HubFileNotCachedError",
    "Checkpoint",
    "read_checkpoint",
    "load_pretrained",
    "load_state_dict",
    "CheckpointError",
    "UnsafeCheckpointError",
    "VisionTransformer",
    "DETR",
    "DETR_CHECKPOINT_URLS",
    "SAGAN",
]
