"""Published weights by tag, in timm's ``pretrained_cfg`` form: where the file is and how its images were prepared.

The ViT-16 and ResNet tags are timm's own Hugging Face Hub repos (``timm/<arch>.<tag>``), in timm's default order
(the first tag is what a bare ``<arch>`` means), with timm's preprocessing values (from timm 1.0's
``vision_transformer.py`` and ``resnet.py``). Their files are timm's key layout and load through the explicit maps
in :mod:`vision_attn.models.weights`. DETR's tag is the official facebookresearch/detr checkpoint (a URL). A model
without published weights has a cfg without a source (:func:`default_pretrained_cfg`).

``label_names_source`` says where the class names come from: an ImageNet subset of timm's ``ImageNetInfo``
(``"imagenet-1k"``, ``"imagenet-21k-goog"``), ``"coco-2017"`` (then ``label_names`` lists them), or ``None``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

__all__ = [
    "PRETRAINED_CFGS",
    "COCO_91_CLASS_NAMES",
    "IMAGENET_SUBSETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "default_pretrained_cfg",
]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_SUBSETS = {1000: "imagenet-1k", 21843: "imagenet-21k-goog"}

# The official DETR COCO head: 91 ids (COCO category id = index; "N/A" for the ids COCO 2017 does not use), the names
# torchvision publishes with its COCO detectors
COCO_91_CLASS_NAMES: Tuple[str, ...] = ("N/A",) + tuple(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"][1:])


def _cfg(
    num_classes: int = 1000,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    license: Optional[str] = "apache-2.0",
    input_size=(3, 224, 224),
    **extra,
) -> Dict[str, Any]:
    cfg: Dict[str, Any] = dict(
        num_classes=num_classes,
        input_size=tuple(input_size),
        mean=tuple(mean),
        std=tuple(std),
        crop_pct=crop_pct,
        interpolation=interpolation,
        crop_mode="center",
        license=license,
        label_names_source=IMAGENET_SUBSETS.get(num_classes),
    )
    cfg.update(extra)
    return cfg


def _vit(num_classes: int = 1000, mean=INCEPTION_MEAN, std=INCEPTION_STD, **kw) -> Dict[str, Any]:
    return _cfg(
        num_classes,
        mean,
        std,
        crop_pct=kw.pop("crop_pct", 0.9),
        fixed_input_size=True,
        first_conv="patch_embed.proj",
        classifier="head",
        **kw,
    )


def _rn(
    input_size=(3, 224, 224), crop_pct: float = 0.875, test: Optional[Tuple[int, float]] = None, **kw
) -> Dict[str, Any]:
    """A ResNet cfg; ``test = (side, crop_pct)``: timm's larger test-time size and crop."""
    extra: Dict[str, Any] = {} if test is None else dict(test_input_size=(3, test[0], test[0]), test_crop_pct=test[1])
    return _cfg(input_size=input_size, crop_pct=crop_pct, first_conv="conv1", classifier="fc", **extra, **kw)


_RSB: Dict[str, Any] = dict(crop_pct=0.95, test=(288, 1.0))  # timm's "ResNet strikes back" a1/a2/b/c/d recipes
_RSB_A3: Dict[str, Any] = dict(input_size=(3, 160, 160), crop_pct=0.95, test=(224, 0.95))
_TV: Dict[str, Any] = dict(interpolation="bilinear", license="bsd-3-clause")
_FB_SSL: Dict[str, Any] = dict(interpolation="bilinear", license="cc-by-nc-4.0")
_SELF_SUP: Dict[str, Any] = dict(
    num_classes=0, mean=IMAGENET_MEAN, std=IMAGENET_STD
)  # DINO / MAE: no head, ImageNet statistics

# arch -> {tag: cfg}, the default tag first (timm's order)
PRETRAINED_CFGS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "vit_tiny_patch16_224": {"augreg_in21k_ft_in1k": _vit(), "augreg_in21k": _vit(21843)},
    "vit_small_patch16_224": {
        "augreg_in21k_ft_in1k": _vit(),
        "augreg_in1k": _vit(),
        "augreg_in21k": _vit(21843),
        "dino": _vit(**_SELF_SUP),
    },
    "vit_base_patch16_224": {
        "augreg2_in21k_ft_in1k": _vit(),
        "augreg_in21k_ft_in1k": _vit(),
        "orig_in21k_ft_in1k": _vit(),
        "augreg_in1k": _vit(),
        "orig_in21k": _vit(0),
        "augreg_in21k": _vit(21843),
        "sam_in1k": _vit(),
        "bamboo": _vit(115217, CLIP_MEAN, CLIP_STD, crop_pct=1.0, license=None),
        "dino": _vit(**_SELF_SUP),
        "mae": _vit(**_SELF_SUP, license="cc-by-nc-4.0"),
    },
    "vit_large_patch16_224": {
        "augreg_in21k_ft_in1k": _vit(),
        "orig_in21k": _vit(0),
        "augreg_in21k": _vit(21843),
        "mae": _vit(**_SELF_SUP, license="cc-by-nc-4.0"),
    },
    "resnet18": {
        "a1_in1k": _rn(**_RSB),
        "a2_in1k": _rn(**_RSB),
        "a3_in1k": _rn(**_RSB_A3),
        "tv_in1k": _rn(**_TV),
        "fb_ssl_yfcc100m_ft_in1k": _rn(**_FB_SSL),
        "fb_swsl_ig1b_ft_in1k": _rn(**_FB_SSL),
        "gluon_in1k": _rn(),
    },
    "resnet34": {
        "a1_in1k": _rn(**_RSB),
        "a2_in1k": _rn(**_RSB),
        "a3_in1k": _rn(**_RSB_A3),
        "bt_in1k": _rn(test=(288, 0.95)),
        "ra4_e3600_r224_in1k": _rn(crop_pct=0.9, test=(288, 1.0), mean=INCEPTION_MEAN, std=INCEPTION_STD),
        "tv_in1k": _rn(**_TV),
        "gluon_in1k": _rn(),
    },
    "resnet50": {
        "a1_in1k": _rn(**_RSB),
        "a1h_in1k": _rn(input_size=(3, 176, 176), crop_pct=0.9, test=(224, 1.0)),
        "a2_in1k": _rn(**_RSB),
        "a3_in1k": _rn(**_RSB_A3),
        "b1k_in1k": _rn(**_RSB),
        "b2k_in1k": _rn(**_RSB),
        "c1_in1k": _rn(**_RSB),
        "c2_in1k": _rn(**_RSB),
        "d_in1k": _rn(**_RSB),
        "ram_in1k": _rn(test=(288, 0.95)),
        "am_in1k": _rn(),
        "ra_in1k": _rn(test=(288, 0.95)),
        "bt_in1k": _rn(test=(288, 0.95)),
        "tv_in1k": _rn(**_TV),
        "tv2_in1k": _rn(input_size=(3, 176, 176), test=(224, 0.965), **_TV),
        "bamboo": _rn(num_classes=0, crop_pct=1.0, license=None),
        "fb_ssl_yfcc100m_ft_in1k": _rn(**_FB_SSL),
        "fb_swsl_ig1b_ft_in1k": _rn(**_FB_SSL),
        "gluon_in1k": _rn(),
    },
}
for _arch, _tags in PRETRAINED_CFGS.items():
    for _tag, _c in _tags.items():
        _c["hf_hub_id"] = f"timm/{_arch}.{_tag}"


def _detr(url: str) -> Dict[str, Any]:
    # DETR's evaluation resize: short side 800, long side at most 1333 (no crop); COCO's 91 category ids
    return _cfg(
        91,
        url=url,
        input_size=(3, 800, 1333),
        crop_pct=1.0,
        interpolation="bilinear",
        crop_mode="short_side",
        short_side=800,
        max_size=1333,
        first_conv="backbone.body.conv1",
        classifier="class_embed",
        label_names_source="coco-2017",
        label_names=list(COCO_91_CLASS_NAMES),
    )


PRETRAINED_CFGS.update(
    {
        "detr_resnet50": {"fb_coco": _detr("https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth")},  # 42.0 AP
        "detr_resnet50_dc5": {
            "fb_coco": _detr("https://dl.fbaipublicfiles.com/detr/detr-r50-dc5-f0fb7ef5.pth")
        },  # 43.3
        "detr_resnet101": {"fb_coco": _detr("https://dl.fbaipublicfiles.com/detr/detr-r101-2c7b67e5.pth")},  # 43.5 AP
    }
)


def default_pretrained_cfg(architecture: str, num_classes: int, input_size: Tuple[int, int, int]) -> Dict[str, Any]:
    """The cfg of a model without published weights: no source; timm's default preprocessing values at 224 px and
    above, no crop below (the 32-px CIFAR models); the training data's values replace them on export."""
    small = max(input_size[1:]) < 224
    return _cfg(
        num_classes,
        input_size=input_size,
        crop_pct=1.0 if small else 0.875,
        license=None,
        architecture=architecture,
        tag=None,
    )


def tags_of(architecture: str) -> List[str]:
    """The architecture's published tags, the default first."""
    return list(PRETRAINED_CFGS.get(architecture, {}))
