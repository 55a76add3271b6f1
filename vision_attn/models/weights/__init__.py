"""Every foreign-weight mapping, one module per source: timm ViT, torchvision/timm ResNet, official and Hugging Face DETR.

A model's ``checkpoint_filter_fn(state_dict)`` calls its source's map here; ``models/checkpoint.py`` reads the file
safely and unwraps it, :func:`vision_attn.models.load_pretrained` (``models/loader.py``) calls that filter. Each map
is explicit, key by key, and every error names the checkpoint's own key.
"""

from .detr import detr_checkpoint_filter, detr_state_dict_from_hf, detr_state_dict_from_official
from .resnet import keep_batch_counters, move_resnet_trunk
from .timm_vit import to_timm, vit_state_dict_from_timm

__all__ = [
    "vit_state_dict_from_timm",
    "to_timm",
    "move_resnet_trunk",
    "keep_batch_counters",
    "detr_checkpoint_filter",
    "detr_state_dict_from_official",
    "detr_state_dict_from_hf",
]
