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

from typing import Any, Dict, List, Sequence, cast

from timm.models.resnet import Bottleneck

from ..layers import LocalSelfAttention2d, NonLocalBlock2d
from .cnn import ResNet, _checked, _cifar_resnet, _cifar_stem, _cifar_stem_options, _set_stem_stride
from .registry import register_model

__all__ = ["sasa_resnet26", "sasa_resnet50", "sasa_resnet26_cifar", "nonlocal_resnet18_cifar"]


def _sasa_resnet(
    name: str,
    layers: Sequence[int],
    num_classes: int,
    in_chans: int,
    kernel_size: int,
    num_heads: int,
    cifar: bool = False,
    **kwargs,
) -> ResNet:
    """timm's bottleneck ResNet with every bottleneck's 3x3 convolution swapped for local self-attention."""
    if cifar:
        _cifar_stem_options(name, kwargs)
    model = ResNet(
        block=Bottleneck,  # type: ignore[arg-type]  # timm types block as an instance; it takes the class
        layers=tuple(layers),
        num_classes=num_classes,
        in_chans=in_chans,
        **kwargs,
    )
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]  # layer1..layer4's, in order
    for block in blocks:
        conv = block.conv2
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.in_channels != conv.out_channels:
            raise ValueError(f"{name}: cannot replace a grouped, dilated or width-changing 3x3 convolution ({conv})")
        # The swap itself: timm declares conv2 a Conv2d.
        block.conv2 = LocalSelfAttention2d(conv.out_channels, kernel_size, num_heads, stride=conv.stride[0])  # type: ignore[assignment]
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
    feature_info = cast(List[Dict[str, Any]], model.feature_info)  # timm's metadata: one dict per feature map
    widths = {info["module"]: info["num_chs"] for info in feature_info}
    for i in sorted(set(nonlocal_stages)):
        if i not in (1, 2, 3, 4):
            raise ValueError(
                f"nonlocal_resnet18_cifar: nonlocal_stages must be among 1-4; got {tuple(nonlocal_stages)}"
            )
        stage = model.get_submodule(f"layer{i}")
        stage.add_module("attn", NonLocalBlock2d(widths[f"layer{i}"], num_heads, reduction, kv_pool))
    return model
