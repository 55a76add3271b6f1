"""Floor 3: metrics (COCO mAP with pycocotools)."""
from .coco import COCO_METRIC_NAMES, coco_evaluate, detr_postprocess, to_coco_results

__all__ = ["COCO_METRIC_NAMES", "coco_evaluate", "detr_postprocess", "to_coco_results"]
