"""Floor 3: metrics: COCO mAP (pycocotools), FID / IS / KID (torchmetrics)."""

from .coco import COCO_METRIC_NAMES, coco_evaluate, detr_postprocess, to_coco_results

__all__ = ["COCO_METRIC_NAMES", "coco_evaluate", "detr_postprocess", "to_coco_results"]

# FID / IS / KID of generated images (SA-GAN)
from .generation import (  # noqa: E402
    ClassifierFeatures,
    InceptionFeatures,
    InceptionWeightsMissingError,
    extract_features,
    generation_metrics_from_features,
    real_features,
    resolve_inception_weights,
)

__all__ += [
    "ClassifierFeatures",
    "InceptionFeatures",
    "InceptionWeightsMissingError",
    "extract_features",
    "generation_metrics_from_features",
    "real_features",
    "resolve_inception_weights",
]
