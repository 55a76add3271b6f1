"""torchvision and timm ResNets: one key layout, so their weights need no rename, only a move between prefixes.

Both name a ResNet ``conv1, bn1, layer{1..4}.{i}.conv{1,2,3} / bn{1,2,3} / downsample.{0,1}, fc`` with the same
shapes, so their state dicts load unchanged into our ResNets (``models/cnn.py`` builds timm's) and into DETR's trunk
(torchvision's, or timm's ``features_only``). A detector's checkpoint holds that trunk under a prefix (official DETR:
``backbone.0.body.``, moved by :func:`move_resnet_trunk`; Hugging Face DETR: ``model.backbone.model.``, moved by its
rename rules in :mod:`.detr`).
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

from torch import Tensor

__all__ = ["move_resnet_trunk", "keep_batch_counters"]


def move_resnet_trunk(key: str, src_prefix: str, dst_prefix: str) -> Optional[str]:
    """``key`` with its ResNet trunk prefix ``src_prefix`` replaced by ``dst_prefix``; None if it is not under it."""
    return dst_prefix + key[len(src_prefix) :] if key.startswith(src_prefix) else None


def keep_batch_counters(mapped: Dict[str, Tensor], own: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Add the model's own ``num_batches_tracked`` where ``mapped`` has none: frozen batch norm (DETR's) keeps no
    batch counter, a trainable ``BatchNorm2d`` does, and the weights of one must load into the other."""
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in mapped:
            mapped[k] = v
    return mapped
