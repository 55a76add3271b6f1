"""ResNets with pixel-level self-attention: timm's ResNet with the attention of ``vision_attn.layers`` put in.

* ``sasa_resnet26``, ``sasa_resnet50``: stand-alone self-attention ResNets (Ramachandran et al. 2019): every
  bottleneck's 3x3 convolution is replaced by :class:`~vision_attn.layers.LocalSelfAttention2d` (7x7 window,
  8 heads, 2x2 average pool after it where the block downsamples); the stem stays convolutional (the
  paper's "conv stem"). ResNet-26 has [1, 2, 4, 1] bottlenecks, ResNet-50 [3, 4, 6, 3].
* ``sasa_resnet26_cifar``: the same for 32-px images (3x3 stride-1 stem, no max-pool, as ``resnet18_cifar``).
* ``nonlocal_resnet18_cifar``: ``resnet18_cifar`` with a :class:`~vision_attn.layers.NonLocalBlock2d` after
  layer2 and layer3 (non-local networks, Wang et al. 2018). The blocks start as the identity and add only
  keys (``layerN.attn.*``), so a ``resnet18_cifar`` checkpoint gives the same network at start.

Everything else (blocks, downsampling shortcuts, init with the last BN of each block zeroed) is timm's.
"""

from __future__ import annotations

from typing import Sequence

import timm
from torch import nn

from ..layers import LocalSelfAttention2d, NonLocalBlock2d
from .cnn import ResNet, _checked, _cifar_resnet, _set_stem_stride
from .registry import register_model

__all__ = ["sasa_resnet26", "sasa_resnet50", "sasa_resnet26_cifar", "nonlocal_resnet18_cifar"]


def _cifar_stem(model: nn.Module, in_chans: int) -> None:
    """3x3 stride-1 stem without max-pool: 32-px images keep their resolution into layer1."""
    stem_width = model.conv1.out_channels
    model.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    _set_stem_stride(model, 1)


def _sasa_resnet(
    name: str,
    layers: Sequence[int],
    num_classes: int,
    in_chans: int,
    kernel_size: int,
    num_heads: int,
    cifar: bool = False,
    **kwargs,
) -> nn.Module:
    """timm's bottleneck ResNet with every bottleneck's 3x3 convolution swapped for local self-attention."""
    model = ResNet(
        block=timm.models.resnet.Bottleneck, layers=tuple(layers), num_classes=num_classes, in_chans=in_chans, **kwargs
    )
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in stage:
            conv = block.conv2
            if conv.groups != 1 or conv.dilation != (1, 1) or conv.in_channels != conv.out_channels:
                raise ValueError(
                    f"{name}: cannot replace a grouped, dilated or width-changing 3x3 convolution ({conv})"
                )
            block.conv2 = LocalSelfAttention2d(conv.out_channels, kernel_size, num_heads, stride=conv.stride[0])
    if cifar:
        _cifar_stem(model, in_chans)
    return _checked(model, in_chans, name)


@register_model
def sasa_resnet26(
    num_classes: int = 1000, in_chans: int = 3, kernel_size: int = 7, num_heads: int = 8, **kwargs
) -> ResNet:
    """SASA ResNet-26 ([1, 2, 4, 1] bottlenecks), conv stem, 7x7 local attention with 8 heads; 224-px images.

    Extra ``kwargs`` go to timm's ``ResNet`` (``channels=``, ``layers=``, ``drop_path_rate=``, ...).
    """
    layers = kwargs.pop("layers", (1, 2, 4, 1))
    return _sasa_resnet("sasa_resnet26", layers, num_classes, in_chans, kernel_size, num_heads, **kwargs)


@register_model
def sasa_resnet50(
    num_classes: int = 1000, in_chans: int = 3, kernel_size: int = 7, num_heads: int = 8, **kwargs
) -> ResNet:
    """SASA ResNet-50 ([3, 4, 6, 3] bottlenecks), conv stem, 7x7 local attention with 8 heads; 224-px images."""
    layers = kwargs.pop("layers", (3, 4, 6, 3))
    return _sasa_resnet("sasa_resnet50", layers, num_classes, in_chans, kernel_size, num_heads, **kwargs)


@register_model
def sasa_resnet26_cifar(
    num_classes: int = 10, in_chans: int = 3, kernel_size: int = 7, num_heads: int = 8, **kwargs
) -> ResNet:
    """SASA ResNet-26 for 32-px images: 3x3 stride-1 stem, no max-pool (layer1 attends at 32x32).

    ``channels=(16, 32, 64, 128)`` / ``layers=(1, 1, 1, 1)`` make smaller ones (``channels // num_heads >= 2``).
    """
    layers = kwargs.pop("layers", (1, 2, 4, 1))
    return _sasa_resnet(
        "sasa_resnet26_cifar", layers, num_classes, in_chans, kernel_size, num_heads, cifar=True, **kwargs
    )


@register_model
def nonlocal_resnet18_cifar(
    num_classes: int = 10,
    in_chans: int = 3,
    nonlocal_stages: Sequence[int] = (2, 3),
    num_heads: int = 1,
    reduction: int = 8,
    kv_pool: int = 1,
    stem_stride: int = 1,
    **kwargs,
) -> ResNet:
    """``resnet18_cifar`` with a non-local (global pixel attention) block after each stage in ``nonlocal_stages``.

    Args:
        nonlocal_stages: stages (1-4) followed by a :class:`NonLocalBlock2d` (default layer2 and layer3: 16x16
            and 8x8 maps for 32-px images).
        num_heads, reduction, kv_pool: of the non-local blocks.
        stem_stride: stride of the 3x3 stem (2: layer1 works at 16x16 for 32-px images, 4x cheaper; for CPU runs).
        kwargs: as ``resnet18_cifar`` (``channels=``, ``layers=`` for smaller networks).
    """
    model = _cifar_resnet("nonlocal_resnet18_cifar", num_classes, in_chans, **kwargs)
    if stem_stride not in (1, 2):
        raise ValueError(f"nonlocal_resnet18_cifar: stem_stride must be 1 or 2; got stem_stride={stem_stride!r}")
    _set_stem_stride(model, stem_stride)
    widths = {info["module"]: info["num_chs"] for info in model.feature_info}
    for i in sorted(set(nonlocal_stages)):
        if i not in (1, 2, 3, 4):
            raise ValueError(
                f"nonlocal_resnet18_cifar: nonlocal_stages must be among 1-4; got {tuple(nonlocal_stages)}"
            )
        stage = getattr(model, f"layer{i}")
        stage.add_module("attn", NonLocalBlock2d(widths[f"layer{i}"], num_heads, reduction, kv_pool))
    return model
