"""Object detection with Lightning: DETR's training loop (set criterion, AdamW with a backbone lr, clipping,
step decay) and COCO evaluation (pycocotools) around any registered DETR.

:meth:`DetectionTask.coco_metrics` is the one place COCO numbers are computed: validation and test log them, and
:func:`vision_attn.run.evaluate.detection.evaluate_detection` writes them with ``predictions.json``."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..callbacks import NonFiniteError, default_callbacks
from ..callbacks.predictions import default_prediction_writer
from ..data.protocols import DetectionAnnotations
from ..losses import SetCriterionConfig
from ..metrics.coco import COCO_METRIC_NAMES, coco_evaluate, detr_postprocess, to_coco_results
from ..models import compile_in_place, create_model, load_pretrained
from ..models import detr as _detr  # noqa: F401  (registers the DETR models)
from ..models.protocols import ClassifierModel, check_protocol, conforms
from .classification import datamodule_class_names
from .options import MovedOptions, option_group

__all__ = ["DetectionTask"]

Batch = Tuple[Tensor, Tensor, List[Dict[str, Any]]]


class DetectionTask(MovedOptions, pl.LightningModule):
    """Train and evaluate a DETR from the registry on a COCO-format datamodule.

    Args:
        model: a registered DETR name (``detr_resnet50``, ``detr_resnet18_small``, ...) or an ``nn.Module``.
        model_args: architecture options for ``create_model`` (``num_queries``, ``hidden_dim``, ``backbone``, ...).
        num_classes: object classes (without "no object"); the CLI fills it from the datamodule.
        pretrained: ``true``: the model's published weights (its ``pretrained_cfg``; DETR: the official checkpoint),
            as ``create_model(name, pretrained=True)``; or a path, URL or ``hf-hub:`` id of weights.
        lr, lr_backbone: AdamW learning rates of the transformer/heads and of parameters named ``backbone.*``.
        weight_decay: AdamW decay (DETR: 1e-4 on every parameter).
        lr_drop_epochs: multiply both rates by ``lr_drop_gamma`` every this many epochs (DETR: 200 of 300);
            None = constant.
        warmup_steps: linear warm-up of both rates over this many optimizer steps (0 = off; DETR has none).
        clip_max_norm: gradient clipping by global norm (DETR: 0.1; 0 = off). ``--trainer.gradient_clip_val``
            overrides it.
        criterion: the matcher costs and loss weights (:class:`~vision_attn.losses.SetCriterionConfig`; DETR's).
        aux_loss: losses at every decoder layer.
        monitor: the validation number that picks ``best.ckpt`` (``AP`` or ``AP50``, ...).
    """

    # options that moved into a group (old name -> group): the CLI names the new place of one still given flat
    MOVED_OPTIONS: ClassVar[Dict[str, str]] = dict.fromkeys(
        ("cost_class", "cost_bbox", "cost_giou", "loss_ce", "loss_bbox", "loss_giou", "eos_coef"), "criterion"
    )

    def __init__(
        self,
        model: Union[str, nn.Module] = "detr_resnet18_small",
        model_args: Optional[Dict[str, Any]] = None,
        num_classes: Optional[int] = None,
        pretrained: Union[bool, str, None] = None,
        lr: float = 1e-4,
        lr_backbone: float = 1e-5,
        weight_decay: float = 1e-4,
        lr_drop_epochs: Optional[int] = 200,
        lr_drop_gamma: float = 0.1,
        warmup_steps: int = 0,
        clip_max_norm: float = 0.1,
        criterion: SetCriterionConfig = SetCriterionConfig(),
        aux_loss: bool = True,
        monitor: str = "AP50",
        compile: Union[bool, str] = False,
    ) -> None:
        super().__init__()
        criterion = option_group(SetCriterionConfig, criterion, "DetectionTask", "criterion")
        self.save_hyperparameters(ignore=["criterion"] + (["model"] if isinstance(model, nn.Module) else []))
        # plain values: checkpoints load with weights_only=True (a dataclass would not), hparams.yaml dumps them
        self.save_hyperparameters({**self.hparams, "criterion": dataclasses.asdict(criterion)})
        if monitor not in COCO_METRIC_NAMES:
            raise ValueError(f"monitor must be one of {COCO_METRIC_NAMES}; got {monitor!r}")
        # a MonitoredTask: validation COCO ``monitor`` picks best.ckpt (the CLI's RunCheckpoint), higher is better
        self.checkpoint_monitor: Optional[Tuple[str, str]] = (f"val/{monitor}", "max")
        self.loss_terms: Dict[str, Tensor] = {}  # NamesLossTerms: the last training step's, for NonFiniteGuard
        if isinstance(model, nn.Module):
            self.model = model
        else:
            kwargs = dict(model_args or {})
            kwargs.setdefault("aux_loss", aux_loss)
            if num_classes is not None:
                kwargs["num_classes"] = num_classes
            self.model = create_model(model, pretrained=pretrained, **kwargs)
        n = (self.model.num_classes if conforms(self.model, ClassifierModel) else None) or num_classes
        if not n:
            raise ValueError("DetectionTask needs num_classes (or a ClassifierModel: num_classes, get_classifier())")
        if num_classes is not None and n != num_classes:
            raise ValueError(f"the model has {n} classes but num_classes={num_classes}")
        self.num_classes = int(n)
        self.criterion = criterion.build(self.num_classes, aux_loss)
        self._predictions: Dict[int, List[Dict[str, Any]]] = {}

    # --- model --------------------------------------------------------------------------------

    def configure_model(self) -> None:
        """``compile=True`` (or a backend name, e.g. ``"aot_eager"``): ``torch.compile`` the network in place
        (``nn.Module.compile``: parameter names and checkpoints are unchanged), before the strategy wraps it."""
        compile_in_place(self.hparams.get("compile", False), self.model)

    def load_weights(self, source: str) -> None:
        """Load weights (ours, a Lightning .ckpt, an official DETR or Hugging Face checkpoint; path or URL)."""
        load_pretrained(self.model, source)

    def forward(self, images: Union[Tensor, Sequence[Tensor]], mask: Optional[Tensor] = None) -> Dict[str, Any]:
        """``images (B, 3, H, W)`` (+ ``mask (B, H, W)`` True on padding) or a list of ``(3, H_i, W_i)`` ->
        the model's dict (``pred_logits (B, Q, K + 1)``, ``pred_boxes (B, Q, 4)``, ``aux_outputs``)."""
        return self.model(images, mask)

    # --- steps --------------------------------------------------------------------------------
    def _losses(self, batch: Batch, stage: str) -> Tuple[Dict[str, Any], Dict[str, Tensor]]:
        images, mask, targets = batch
        outputs = self.model(images, mask)
        try:
            losses = self.criterion(outputs, targets)
        except FloatingPointError as err:  # the matcher refuses non-finite predictions
            raise NonFiniteError(f"{stage} step {self.global_step}: {err}") from None
        bs = len(targets)
        on_step = stage == "train"
        sync = stage != "train"
        self.log(
            f"{stage}/loss",
            losses["loss"],
            prog_bar=True,
            batch_size=bs,
            on_step=on_step,
            on_epoch=True,
            sync_dist=sync,
        )
        for k in ("loss_ce", "loss_bbox", "loss_giou", "class_error", "cardinality_error"):
            self.log(f"{stage}/{k}", losses[k], batch_size=bs, on_step=False, on_epoch=True, sync_dist=sync)
        return outputs, losses

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        _, losses = self._losses(batch, "train")
        # NonFiniteGuard names the first non-finite term (components before their sum)
        self.loss_terms = {f"train/{k}": v for k, v in losses.items() if k.startswith("loss")}
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return losses["loss"]

    def _collect(self, outputs: Dict[str, Any], targets: List[Dict[str, Any]]) -> None:
        """Remember this batch's detections by image id (an image repeated by a DDP sampler counts once), as COCO
        results whose ``category_id`` is still the label: :meth:`coco_metrics` maps labels to the data's categories."""
        results = to_coco_results(outputs, targets, range(self.num_classes))
        for t in targets:
            self._predictions[int(t["image_id"])] = []
        for r in results:
            self._predictions[r["image_id"]].append(r)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        outputs, _ = self._losses(batch, "val")
        self._collect(outputs, batch[2])

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        outputs, _ = self._losses(batch, "test")
        self._collect(outputs, batch[2])

    def predict_step(self, batch: Batch, batch_idx: int) -> List[Dict[str, Tensor]]:
        """``(images, mask, targets)`` -> per image ``{"scores" (Q,), "labels" (Q,), "boxes" (Q, 4)}``: each query's
        best real class, its softmax score and its xyxy box in the pixels of the original image (``orig_size``).

        Image files that could not be read (targets with ``"error"``, see :mod:`vision_attn.data.images`) have no
        row and get nothing. COCO batches (targets with ``image_id``) are also collected for :meth:`coco_metrics`."""
        images, mask, targets = batch
        targets = [t for t in targets if "error" not in t]
        if images is None:
            return []
        outputs = self.model(images, mask)
        if all("image_id" in t for t in targets):
            self._collect(outputs, targets)
        return detr_postprocess(outputs, torch.stack([torch.as_tensor(t["orig_size"]) for t in targets]))

    def on_validation_epoch_start(self) -> None:
        self._predictions = {}

    on_test_epoch_start = on_predict_epoch_start = on_validation_epoch_start

    def _gathered_predictions(self) -> Dict[int, List[Dict[str, Any]]]:
        """Every process's predictions (all_gather_object under DDP), merged by image id."""
        merged = dict(self._predictions)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: List[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, self._predictions)
            merged = {}
            for p in parts:
                merged.update(p)
        return merged

    def coco_metrics(
        self, datamodule: pl.LightningDataModule, split: str
    ) -> Tuple[Dict[str, float], List[Dict[str, Any]]]:
        """The COCO evaluation of the detections collected since the loop started (every process's, merged by image id).

        Args:
            datamodule: a COCO datamodule (``label_to_category_id``, ``category_ids``, ``ann_file``, ``split_name``).
            split: ``"train"``/``"val"``/``"test"`` or a split name: whose annotation file is the ground truth.

        Returns:
            the 12 COCO numbers (pycocotools) and ``images`` (how many images the detections cover), and the
            detections as COCO results (original image ids, original category ids, ``[x, y, w, h]`` in original
            pixels), by image id; labels that are no category of the data are left out.
        """
        check_protocol(datamodule, DetectionAnnotations, "DetectionTask evaluation's datamodule")
        # a label's category id, for the labels that are categories of this data (DETR's COCO head has unused labels)
        categories = set(datamodule.category_ids)
        to_category = {lab: c for lab, c in enumerate(datamodule.label_to_category_id) if c in categories}
        preds = self._gathered_predictions()
        results = [
            dict(r, category_id=to_category[r["category_id"]])
            for image_id in sorted(preds)
            for r in preds[image_id]
            if r["category_id"] in to_category
        ]
        metrics = coco_evaluate(datamodule.ann_file(datamodule.split_name(split)), results, image_ids=sorted(preds))
        return {**metrics, "images": float(len(preds))}, results

    def _log_coco(self, stage: str) -> None:
        if self.trainer.sanity_checking:
            return
        metrics, _ = self.coco_metrics(
            self.trainer.datamodule, stage
        )  # every rank: the same numbers from the same gather
        for k, v in metrics.items():
            self.log(f"{stage}/{k}", v, prog_bar=k == self.hparams.monitor)

    def on_validation_epoch_end(self) -> None:
        self._log_coco("val")

    def on_test_epoch_end(self) -> None:
        self._log_coco("test")

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # read by create_model(pretrained=ckpt) and export: the class head's size and the data's label names
        checkpoint["num_classes"] = self.num_classes
        checkpoint["class_names"] = datamodule_class_names(self, self.num_classes)

    # --- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        backbone = [p for n, p in self.model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
        rest = [p for n, p in self.model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
        groups = [{"params": rest, "lr": hp.lr}]
        if backbone:
            groups.append({"params": backbone, "lr": hp.lr_backbone})
        opt = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else None
        steps_per_epoch = max(1, round(total / epochs)) if epochs else total

        def factor(step: int) -> float:
            warm = min(1.0, (step + 1) / hp.warmup_steps) if hp.warmup_steps > 0 else 1.0
            drops = step // (hp.lr_drop_epochs * steps_per_epoch) if hp.lr_drop_epochs else 0
            return warm * hp.lr_drop_gamma**drops

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        clip = gradient_clip_val if gradient_clip_val is not None else self.hparams.clip_max_norm
        if clip and clip > 0:
            self.clip_gradients(
                optimizer, gradient_clip_val=clip, gradient_clip_algorithm=gradient_clip_algorithm or "norm"
            )

    def configure_callbacks(self):
        # the non-finite guard and RNG state for exact resume (unless the trainer has its own); predict over image
        # files (--data.init_args.predict_root) writes predictions.json (best.ckpt/last.ckpt: the CLI's RunCheckpoint)
        return [*default_callbacks(self._trainer), *default_prediction_writer(self._trainer)]
