"""DETR (Carion et al. 2020, "End-to-End Object Detection with Transformers") on the shared attention core.

A CNN backbone, a 1x1 projection, 2-D sine positions, an encoder-decoder transformer over learned object queries,
a class head (``num_classes + 1``, the last one "no object") and a 3-layer box MLP. Parameter names follow
facebookresearch/detr, so its checkpoints load by an explicit, shape-checked rename
(:meth:`DETR.checkpoint_filter_fn`, mapped in :mod:`vision_attn.models.weights.detr`), as do Hugging Face
``DetrForObjectDetection`` state dicts.

    >>> det = create_model("detr_resnet50", pretrained=DETR_CHECKPOINT_URLS["detr_resnet50"])
    >>> out = det([img1, img2])            # ImageNet-normalised (3, H_i, W_i) tensors of any sizes
    >>> out["pred_logits"].shape, out["pred_boxes"].shape      # (2, 100, 92), (2, 100, 4)
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union, cast

import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.models import FeatureInfo
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter  # private: DETR's own; no public equivalent
from torchvision.ops.misc import FrozenBatchNorm2d

from ..attention import sine_position_encoding_2d
from ..layers.detr_transformer import DetrTransformer
from ..ops import pad_images_to_batch
from .builder import create_model
from .features import feature_extractor
from .hub import PretrainedMixin
from .pretrained_cfgs import PRETRAINED_CFGS
from .registry import is_model, register_model
from .weights import detr_checkpoint_filter

__all__ = [
    "DETR",
    "DetrBackbone",
    "MLP",
    "DETR_CHECKPOINT_URLS",
    "batch_images",
]

# The official facebookresearch/detr COCO checkpoints ({"model": state_dict}, 91 classes + no-object), as their
# pretrained_cfg (tag "fb_coco") names them: 42.0, 43.3 and 43.5 AP on val2017.
DETR_CHECKPOINT_URLS = {
    arch: PRETRAINED_CFGS[arch]["fb_coco"]["url"] for arch in ("detr_resnet50", "detr_resnet50_dc5", "detr_resnet101")
}

_TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def batch_images(
    images: Union[Tensor, Sequence[Tensor]], mask: Optional[Tensor] = None, in_chans: int = 3
) -> Tuple[Tensor, Tensor]:
    """One padded batch and its padding mask, from a batch tensor or a list of differently sized images.

    Args:
        images: ``(B, C, H, W)``, or a list of ``(C, H_i, W_i)`` tensors (zero-padded at the bottom and right to
            the largest height and width, as DETR does: :func:`~vision_attn.ops.pad_images_to_batch`).
        mask: ``(B, H, W)`` bool, True on padding pixels; only with a tensor ``images`` (default: no padding).

    Returns:
        ``images (B, C, H, W)`` and ``mask (B, H, W)`` bool (True = padding).
    """
    if isinstance(images, (list, tuple)):
        if mask is not None:
            raise ValueError("mask is computed from the image sizes when images is a list; pass mask=None")
        return pad_images_to_batch(images, channels=in_chans)
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != in_chans:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(
            f"DETR expects images of shape (B, {in_chans}, H, W) or a list of ({in_chans}, H, W) tensors; got {shape}"
        )
    B, _, H, W = images.shape
    if mask is None:
        return images, torch.zeros((B, H, W), dtype=torch.bool, device=images.device)
    if mask.dtype != torch.bool or mask.shape != (B, H, W):
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} and dtype {mask.dtype}; expected bool (B, H, W)=({B}, {H}, {W}), True on padding"
        )
    # a data-dependent check: eager only (under torch.compile / torch.export the caller vouches for the mask)
    if not torch.compiler.is_compiling() and bool(mask.flatten(1).all(dim=1).any()):
        raise ValueError("mask marks every pixel of an image as padding; each image needs at least one real pixel")
    return images, mask


class DetrBackbone(nn.Module):
    """The trunk: images to the last feature map, and the padding mask resized to it.

    Args:
        name: a torchvision ResNet (``resnet18/34/50/101/152``, the official DETR layout), any other model of our
            registry with the feature API (a ViT, ``sasa_resnet26``, ``nonlocal_resnet18_cifar``, ...: its last map
            through ``create_model(name, features_only=True)``), or any timm CNN name (``features_only``, last stage).
        pretrained: load ImageNet weights (torchvision's ``IMAGENET1K_V1``, as DETR; timm's default tag; our
            model's default ``pretrained_cfg``); downloads.
        dilation: dilate the last stage instead of striding it (DETR's DC5: stride 16 instead of 32); ResNets only.
        freeze_bn: frozen batch norm (DETR's choice, needed for pretrained weights with small batches); False keeps
            trainable ``BatchNorm2d`` (for a backbone trained from scratch).
        freeze_early_layers: freeze the stem and the first stage (DETR freezes ``conv1``, ``bn1``, ``layer1``).
        backbone_kwargs: architecture options for one of our registry's models (``img_size``, ``depth``, ``channels``).

    A ViT backbone gives its last block's tokens, normalised, as a ``(B, D, H/p, W/p)`` map; it runs at any image
    size (learned positions resampled), and batches are zero-padded (and marked as padding) to a multiple of ``p``.
    """

    def __init__(
        self,
        name: str = "resnet50",
        pretrained: bool = False,
        dilation: bool = False,
        freeze_bn: bool = True,
        freeze_early_layers: bool = True,
        backbone_kwargs: Optional[Dict[str, object]] = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.pad_multiple = 1  # a ViT needs whole patches
        if backbone_kwargs and (name in _TORCHVISION_RESNETS or not is_model(name)):
            raise ValueError(
                f"backbone_kwargs apply to the models of vision_attn's registry; {name!r} is not one of them"
            )
        early: Tuple[str, ...]
        if name in _TORCHVISION_RESNETS:
            if dilation and name in ("resnet18", "resnet34"):
                raise ValueError(f"dilation (DC5) needs a bottleneck ResNet; torchvision's {name} does not support it")
            weights = "IMAGENET1K_V1" if pretrained else None
            norm_layer = FrozenBatchNorm2d if freeze_bn else nn.BatchNorm2d
            trunk = getattr(torchvision.models, name)(  # the factory of that name (one of _TORCHVISION_RESNETS)
                weights=weights, replace_stride_with_dilation=[False, False, dilation], norm_layer=norm_layer
            )
            self.body = IntermediateLayerGetter(trunk, return_layers={"layer4": "0"})
            self.num_channels = [m for m in trunk.layer4.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
            self.stride = 16 if dilation else 32
            early = ("conv1", "bn1", "layer1")
            self._timm = False
        elif is_model(name):
            early = self._from_registry(name, pretrained, dilation, freeze_bn, dict(backbone_kwargs or {}))
            self._timm = True
        else:
            kwargs: Dict[str, Any] = {"output_stride": 16} if dilation else {}
            self.body = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=(-1,), **kwargs)
            if freeze_bn:
                self.body = timm.layers.freeze_batch_norm_2d(self.body)
            info = self.body.feature_info
            self.num_channels = info.channels()[-1]
            self.stride = info.reduction()[-1]
            # everything up to the last module at stride <= 4 (DETR's conv1/bn1/layer1 for a ResNet)
            stem = [i["module"].replace(".", "_") for i in info.info if i["reduction"] <= 4]
            names = list(self.body._modules)
            early = tuple(names[: names.index(stem[-1]) + 1]) if stem and stem[-1] in names else ()
            self._timm = True
        if freeze_early_layers:
            for n, p in self.body.named_parameters():
                if n.split(".")[0] in early:
                    p.requires_grad_(False)

    def _from_registry(
        self, name: str, pretrained: bool, dilation: bool, freeze_bn: bool, kwargs: dict
    ) -> Tuple[str, ...]:
        """Our model ``name`` as the body (its last feature map); returns the names of its early modules."""
        if dilation:
            raise ValueError(
                f"dilation (DC5) needs a torchvision or timm ResNet; backbone {name!r} does not support it"
            )
        vit = fnmatch.fnmatchcase(name, "vit_*")
        if vit:
            kwargs.setdefault("dynamic_img_size", True)  # detection images come in every size
        # a ViT's map: its last block's tokens through the final norm, as its own forward_features
        body = feature_extractor(create_model(name, pretrained=pretrained or None, **kwargs), name, (-1,), norm=vit)
        self.body = timm.layers.freeze_batch_norm_2d(body) if freeze_bn else body
        info = cast(FeatureInfo, body.feature_info)  # what timm's feature wrappers carry
        self.num_channels = info.channels()[-1]
        self.stride = info.reduction()[-1]
        if vit:
            self.pad_multiple = self.stride
            return ()
        return ("conv1", "bn1", "act1", "maxpool", "layer1")

    def forward(self, images: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        """``images (B, 3, H, W)``, ``mask (B, H, W)`` bool -> ``features (B, C, h, w)``, ``mask (B, h, w)`` bool."""
        p = self.pad_multiple
        if p > 1 and (images.shape[-2] % p or images.shape[-1] % p):
            pad = (0, -images.shape[-1] % p, 0, -images.shape[-2] % p)
            images, mask = F.pad(images, pad), F.pad(mask, pad, value=True)
        out = self.body(images)
        features = out[-1] if self._timm else out["0"]
        # nearest resize of the pixel mask, as DETR
        small = F.interpolate(mask[None].float(), size=features.shape[-2:]).to(torch.bool)[0]
        return features, small


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (DETR's box head: ``layers.0/1/2``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: Tensor) -> Tensor:
        """``(..., input_dim)`` -> ``(..., output_dim)``."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class DETR(PretrainedMixin, nn.Module):
    """The DETR detector.

    Args:
        num_classes: object classes K; the class head has ``K + 1`` outputs, the last one "no object". The official
            COCO checkpoints use 91 (COCO's largest category id + 1).
        num_queries: object queries Q, the most objects one image can hold (100 for COCO).
        hidden_dim, nheads, enc_layers, dec_layers, dim_feedforward, dropout, activation, pre_norm: the
            transformer (DETR: 256, 8, 6, 6, 2048, 0.1, relu, post-norm).
        aux_loss: also return the predictions of every decoder layer but the last (``aux_outputs``).
        backbone: a torchvision ResNet name, any model of our registry with the feature API (a ViT, a SASA or
            non-local ResNet: the detector then attends from pixel to box on the one core), or any timm CNN (see
            :class:`DetrBackbone`); ``backbone_kwargs``: options for one of our models (``img_size``, ``depth``, ...).
        pretrained_backbone: ImageNet weights for the backbone (downloads); dilation: DC5.
        freeze_bn, freeze_early_layers: see :class:`DetrBackbone`.
    """

    def __init__(
        self,
        num_classes: int = 91,
        num_queries: int = 100,
        hidden_dim: int = 256,
        nheads: int = 8,
        enc_layers: int = 6,
        dec_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        pre_norm: bool = False,
        aux_loss: bool = True,
        backbone: str = "resnet50",
        pretrained_backbone: bool = False,
        dilation: bool = False,
        freeze_bn: bool = True,
        freeze_early_layers: bool = True,
        backbone_kwargs: Optional[Dict[str, object]] = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        if num_queries < 1:
            raise ValueError(f"num_queries must be >= 1; got {num_queries}")
        if hidden_dim % 2 or hidden_dim % nheads:
            raise ValueError(f"hidden_dim={hidden_dim} must be even (sine positions) and divisible by nheads={nheads}")
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.hidden_dim = hidden_dim
        self.aux_loss = aux_loss
        self.in_chans = 3
        self.backbone = DetrBackbone(
            backbone, pretrained_backbone, dilation, freeze_bn, freeze_early_layers, backbone_kwargs
        )
        self.transformer = DetrTransformer(
            hidden_dim,
            nheads,
            enc_layers,
            dec_layers,
            dim_feedforward,
            dropout,
            activation,
            pre_norm,
            return_intermediate_dec=True,
        )
        self.input_proj = nn.Conv2d(self.backbone.num_channels, hidden_dim, kernel_size=1)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)

    def get_classifier(self) -> nn.Module:
        """The class head (re-initialised by ``load_pretrained`` when ``num_classes`` differs from a checkpoint's)."""
        return self.class_embed

    def feature_size(self, height: int, width: int) -> Tuple[int, int]:
        """The feature grid ``(h, w)`` of a (padded) ``height x width`` batch: the cross-attention maps that
        :func:`~vision_attn.capture_attention` records are ``(B, H, Q, h*w)``, row-major over this grid."""
        s = self.backbone.stride
        return math.ceil(height / s), math.ceil(width / s)

    def forward(self, images: Union[Tensor, Sequence[Tensor]], mask: Optional[Tensor] = None) -> Dict[str, object]:
        """Detect objects.

        Args:
            images: ``(B, 3, H, W)`` ImageNet-normalised, or a list of ``(3, H_i, W_i)`` tensors of different sizes
                (padded inside, bottom and right).
            mask: ``(B, H, W)`` bool, True on padding pixels (only with a tensor ``images``). Given, padded keys are
                masked; this ``(images, mask)`` signature is the one to compile or export for padded batches.

        Returns:
            a dict:

            - ``pred_logits (B, Q, K + 1)``: class logits, the last index "no object";
            - ``pred_boxes (B, Q, 4)``: sigmoid ``(cx, cy, w, h)`` normalised by each image's unpadded size;
            - ``aux_outputs``: (with ``aux_loss``) a list of ``dec_layers - 1`` dicts with the same two keys, one
                per decoder layer but the last.

            Predictions are float32, also under autocast (the matcher and the losses need the precision).
        """
        # Padding is known from the input's structure, never from its values: one traceable computation per
        # signature (images alone: no key mask, the fastest kernels; (images, mask): masked keys).
        has_padding = mask is not None or (
            isinstance(images, (list, tuple)) and len({tuple(im.shape[1:]) for im in images}) > 1
        )
        x, mask = batch_images(images, mask, self.in_chans)
        features, feature_mask = self.backbone(x, mask)
        src = self.input_proj(features)
        pos = sine_position_encoding_2d(~feature_mask, num_pos_feats=self.hidden_dim // 2, normalize=True).to(src.dtype)
        if has_padding and not torch.compiler.is_compiling() and not bool(feature_mask.any()):
            has_padding = False  # eager only: nothing to mask, so the fastest attention kernels
        padded = feature_mask if has_padding else None
        hs, _ = self.transformer(src, padded, self.query_embed.weight, pos)
        logits = self.class_embed(hs).float()
        boxes = self.bbox_embed(hs).float().sigmoid()
        out: Dict[str, object] = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]
        return out

    def offline_model_args(self, args: Dict[str, object]) -> Dict[str, object]:
        """``args`` that rebuild this model without downloading its backbone's ImageNet weights (``save_pretrained``
        holds every weight): the download is switched off, the batch norm and freezing it implied are kept."""
        args = dict(args)
        if args.pop("pretrained_backbone", False):
            frozen = (FrozenBatchNorm2d, timm.layers.FrozenBatchNormAct2d)  # what timm's freeze_batch_norm_2d makes
            args.setdefault("freeze_bn", any(isinstance(m, frozen) for m in self.backbone.modules()))
            args.setdefault("freeze_early_layers", any(not p.requires_grad for p in self.backbone.parameters()))
        args["pretrained_backbone"] = False
        return args

    # --- foreign weights -------------------------------------------------------------------------
    def checkpoint_filter_fn(
        self, state_dict: Dict[str, Tensor], model: Optional[nn.Module] = None
    ) -> Dict[str, Tensor]:
        """Map an official facebookresearch/detr state dict, a Hugging Face ``DetrForObjectDetection`` one, or ours
        onto this model, asserting every shape (:func:`~vision_attn.models.weights.detr_checkpoint_filter`)."""
        return detr_checkpoint_filter(state_dict, self if model is None else model)


# --- registered models ---------------------------------------------------------------------------------------


def _detr(defaults: dict, **kwargs) -> DETR:
    args = dict(defaults)
    if kwargs.get("backbone", defaults["backbone"]) != defaults["backbone"]:
        args.pop("dilation", None)  # DC5 belongs to the recipe's ResNet, not to another trunk
    args.update(kwargs)
    return DETR(**args)


@register_model
def detr_resnet50(**kwargs) -> DETR:
    """DETR-R50 (41M params): the official COCO model, 42.0 AP with ``DETR_CHECKPOINT_URLS["detr_resnet50"]``."""
    return _detr(dict(backbone="resnet50"), **kwargs)


@register_model
def detr_resnet50_dc5(**kwargs) -> DETR:
    """DETR-DC5-R50: the last ResNet stage dilated (stride 16), 43.3 AP with its official checkpoint."""
    return _detr(dict(backbone="resnet50", dilation=True), **kwargs)


@register_model
def detr_resnet101(**kwargs) -> DETR:
    """DETR-R101 (60M params), 43.5 AP with its official checkpoint."""
    return _detr(dict(backbone="resnet101"), **kwargs)


@register_model
def detr_resnet18_small(**kwargs) -> DETR:
    """A CPU-sized DETR for training on small data: ResNet-18 backbone, width 128, 3 encoder and 3 decoder layers,
    8 heads, feed-forward 512, 30 queries, no dropout. Without ``pretrained_backbone`` the backbone keeps trainable
    batch norm and no layer is frozen (frozen batch norm would leave a from-scratch ResNet unnormalised)."""
    pretrained = bool(kwargs.get("pretrained_backbone", False))
    defaults = dict(
        backbone="resnet18",
        hidden_dim=128,
        nheads=8,
        enc_layers=3,
        dec_layers=3,
        dim_feedforward=512,
        num_queries=30,
        dropout=0.0,
        freeze_bn=pretrained,
        freeze_early_layers=pretrained,
    )
    return _detr(defaults, **kwargs)


@register_model
def detr_tiny_prenorm(**kwargs) -> DETR:
    """The DETR that trains from scratch on a CPU in minutes (``configs/detr_shapes.yaml``): timm's ``test_resnet``
    backbone (0.37M params, last stage dilated to stride 16, trainable batch norm), a pre-norm transformer of width
    128 with 2 encoder and 3 decoder layers, 8 heads, feed-forward 512, 10 queries, no dropout. Pre-norm is what lets
    it train at a high learning rate: the post-norm original stayed on the "no object" plateau on small data."""
    defaults = dict(
        backbone="test_resnet",
        dilation=True,
        pre_norm=True,
        hidden_dim=128,
        nheads=8,
        enc_layers=2,
        dec_layers=3,
        dim_feedforward=512,
        num_queries=10,
        dropout=0.0,
        freeze_bn=False,
        freeze_early_layers=False,
    )
    return _detr(defaults, **kwargs)
