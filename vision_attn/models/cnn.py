"""CNN baselines: timm's ResNets (the same architecture, key layout and weights as torchvision's).

A CNN is self-attention restricted to a fixed local window with content-independent weights; these are
the peers every attention model here is compared against.

They are instances of :class:`ResNet`, timm's ``ResNet`` class with our ``save_pretrained`` / ``push_to_hub``
(:class:`~vision_attn.models.hub.PretrainedMixin`): still timm ResNets for every timm tool (``isinstance``, timm's
feature extraction and checkpoint helpers), built by timm's own ``build_model_with_cfg``.
"""

from typing import Any, Dict, List, cast

import timm
import torch.fx
from torch import Tensor, nn

from ..layers import check_image_input
from .errors import ModelOptionError
from .hub import PretrainedMixin
from .registry import register_model

__all__ = ["ResNet", "resnet18", "resnet34", "resnet50", "resnet18_cifar", "resnet10_narrow_cifar"]


# fx records the input check as one call, run with the graph (it cannot branch on traced shapes).
torch.fx.wrap("check_image_input")


class ResNet(PretrainedMixin, timm.models.resnet.ResNet):
    """timm's ResNet (same constructor, modules and key layout) with ``save_pretrained`` and ``push_to_hub``, and an
    input check that names the model (it compiles in TorchScript and traces in torch.fx, as timm's own forward)."""

    model_name = "ResNet"  # the registry name, for error messages (set by the factories)

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's, plus a non-local block appended to a stage (``layerN.attn``) in that stage, after its blocks."""
        matcher = super().group_matcher(coarse)
        if not coarse:
            matcher["blocks"] = [(r"^layer(\d+)\.(\d+)", None), (r"^layer(\d+)\.attn", (9999,))]
        return matcher

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, in_chans, H, W)`` -> logits ``(B, num_classes)`` (pooled features when ``num_classes=0``)."""
        check_image_input(x, self.in_chans, self.model_name)
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x


# timm's block and depth of each ImageNet ResNet (timm/models/resnet.py)
_TIMM_RESNETS = {
    "resnet18": (timm.models.resnet.BasicBlock, (2, 2, 2, 2)),
    "resnet34": (timm.models.resnet.BasicBlock, (3, 4, 6, 3)),
    "resnet50": (timm.models.resnet.Bottleneck, (3, 4, 6, 3)),
}


def _checked(model: ResNet, in_chans: int, name: str) -> ResNet:
    """Make the model refuse input of the wrong rank or channel count with a message naming both."""
    model.in_chans = in_chans
    model.model_name = name
    return model


def _timm_resnet(arch: str, num_classes: int, in_chans: int, **kwargs) -> ResNet:
    # pretrained weights come through create_model(pretrained=...), never from the hub here.
    block, layers = _TIMM_RESNETS[arch]
    model = timm.models.build_model_with_cfg(
        ResNet, arch, pretrained=False, block=block, layers=layers, num_classes=num_classes, in_chans=in_chans, **kwargs
    )
    return _checked(model, in_chans, arch)


@register_model
def resnet18(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-18, ImageNet stem (7x7/2 conv + max-pool), timm's."""
    return _timm_resnet("resnet18", num_classes, in_chans, **kwargs)


@register_model
def resnet34(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-34, ImageNet stem, timm's."""
    return _timm_resnet("resnet34", num_classes, in_chans, **kwargs)


@register_model
def resnet50(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-50, ImageNet stem, timm's."""
    return _timm_resnet("resnet50", num_classes, in_chans, **kwargs)


def _stem_conv(model: nn.Module) -> nn.Conv2d:
    # timm's default stem is one conv (its deep stems, which mypy infers for conv1, are a Sequential).
    return cast(nn.Conv2d, model.conv1)


def _set_stem_stride(model: nn.Module, stride: int) -> None:
    """A stem of ``stride`` without max-pool: the stages then reduce ``stride * (1, 2, 4, 8)`` (timm's ``feature_info``
    assumes the ImageNet stem's 2 and 4)."""
    _stem_conv(model).stride = (stride, stride)
    model.maxpool = nn.Identity()
    reduction = {"act1": stride, "layer1": stride, "layer2": 2 * stride, "layer3": 4 * stride, "layer4": 8 * stride}
    for info in cast(List[Dict[str, Any]], model.feature_info):  # timm's metadata: one dict per feature map
        info["reduction"] = reduction[info["module"]]


def _cifar_stem_options(name: str, kwargs: Dict[str, Any]) -> None:
    """Refuse timm's deep stems for a CIFAR model, whose stem is replaced by one 3x3 stride-1 conv."""
    if kwargs.get("stem_type", ""):
        raise ModelOptionError(
            f"model {name!r}: option stem_type expects '' (the CIFAR recipe's stem is one 3x3 stride-1 conv), "
            f"got {kwargs['stem_type']!r}"
        )


def _cifar_stem(model: nn.Module, in_chans: int) -> None:
    """3x3 stride-1 stem without max-pool: 32-px images keep their resolution into layer1."""
    stem = nn.Conv2d(in_chans, _stem_conv(model).out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.conv1 = stem
    nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")
    _set_stem_stride(model, 1)


def _cifar_resnet(name: str, num_classes: int, in_chans: int, layers=(2, 2, 2, 2), **kwargs) -> ResNet:
    """timm's ResNet with basic blocks, a 3x3 stride-1 stem and no max-pool (the usual 32-px recipe)."""
    _cifar_stem_options(name, kwargs)
    model = ResNet(
        block=timm.models.resnet.BasicBlock,  # type: ignore[arg-type]  # timm types block as an instance; it takes the class
        layers=layers,
        num_classes=num_classes,
        in_chans=in_chans,
        **kwargs,
    )
    _cifar_stem(model, in_chans)
    return _checked(model, in_chans, name)


@register_model
def resnet18_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-18 for 32-px images: 3x3 stride-1 stem, no max-pool (the usual CIFAR recipe).

    Extra ``kwargs`` go to timm's ``ResNet`` (e.g. ``channels=(32, 64, 128, 256)`` or ``layers=(1, 1, 1, 1)``
    for a smaller network).
    """
    return _cifar_resnet("resnet18_cifar", num_classes, in_chans, **kwargs)


@register_model
def resnet10_narrow_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> ResNet:
    """A CPU-sized CNN peer (0.3M params): the CIFAR ResNet with one basic block per stage and widths 16-128."""
    kwargs.setdefault("layers", (1, 1, 1, 1))
    kwargs.setdefault("channels", (16, 32, 64, 128))
    return _cifar_resnet("resnet10_narrow_cifar", num_classes, in_chans, **kwargs)
