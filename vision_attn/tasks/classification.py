"""Image classification with Lightning: the training loop around any registered model."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple, Union

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from ..callbacks import default_callbacks
from ..callbacks.predictions import default_prediction_writer
from ..models import compile_in_place, create_model, load_pretrained
from ..models.protocols import ClassifierModel, DecaySkipping, conforms

__all__ = [
    "ClassificationTask",
    "datamodule_class_names",
    "optimizer_steps_per_epoch",
    "param_groups_weight_decay",
    "warmup_cosine",
]


def param_groups_weight_decay(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """AdamW groups: no decay on norms, biases (any 0/1-D parameter) and the model's ``no_weight_decay()`` names."""
    skip = set(model.no_weight_decay()) if conforms(model, DecaySkipping) else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine down to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def optimizer_steps_per_epoch(trainer: pl.Trainer, total_steps: int) -> float:
    """Optimizer steps in one epoch of this process's training loader (for epoch-denominated warm-ups).

    Works whether the budget is ``max_epochs`` or ``max_steps`` (then ``total_steps`` may span many epochs);
    falls back to ``total_steps`` when the loader has no length.
    """
    batches = trainer.num_training_batches
    if batches is None or math.isinf(batches) or batches <= 0:
        return float(total_steps)
    return max(1.0, math.ceil(batches / max(1, trainer.accumulate_grad_batches)))


def datamodule_class_names(task: pl.LightningModule, num_classes: int) -> Optional[List[str]]:
    """The attached datamodule's ``classes`` (index = label) when it has ``num_classes`` of them; None otherwise."""
    try:
        names = list(task.trainer.datamodule.classes)
    except (RuntimeError, AttributeError, OSError, ValueError):  # no trainer / datamodule, or classes unknown yet
        return None
    return [str(c) for c in names] if len(names) == num_classes else None


class ClassificationTask(pl.LightningModule):
    """Train and evaluate a classifier from the registry.

    Args:
        model: a registered name (``vision_attn.list_models()``), or an ``nn.Module`` (Python use).
        model_args: architecture options for ``create_model`` (``img_size``, ``depth``, ``drop_path_rate``, ...).
        num_classes: classifier outputs; the CLI fills it from the datamodule.
        pretrained: ``true``: the model's published weights (its ``pretrained_cfg``, through the Hub cache), as
            ``create_model(name, pretrained=True)``; or a path, URL or ``hf-hub:`` id of weights.
        lr: peak learning rate; weight_decay: decoupled decay (not on norms, biases, positions, class token).
        betas: AdamW betas.
        optimizer: ``"adamw"`` or ``"sgd"`` (Nesterov, ``momentum``; the usual CIFAR ResNet recipe).
        warmup_epochs: linear warm-up length (fractions allowed); then cosine to ``min_lr_ratio * lr``.
        warmup_steps: the warm-up in optimizer steps instead (overrides ``warmup_epochs``; the data-size sweep uses it so
            that every training fraction warms up alike).
        label_smoothing: cross-entropy label smoothing.
        mixup_alpha, cutmix_alpha: timm's Mixup/CutMix (0 = off; the train batch size must be even).
        ema_decay: keep an exponential moving average of the weights (0 = off); when on, validation, test
            and checkpoints-for-inference use the EMA weights.
    """

    def __init__(
        self,
        model: Union[str, nn.Module] = "vit_tiny_patch4_32",
        model_args: Optional[Dict[str, Any]] = None,
        num_classes: Optional[int] = None,
        pretrained: Union[bool, str, None] = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: Tuple[float, float] = (0.9, 0.999),
        optimizer: str = "adamw",
        momentum: float = 0.9,
        warmup_epochs: float = 5.0,
        warmup_steps: Optional[int] = None,
        min_lr_ratio: float = 0.01,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        ema_decay: float = 0.0,
        compile: Union[bool, str] = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"] if isinstance(model, nn.Module) else None)
        self.checkpoint_monitor: Optional[Tuple[str, str]] = ("val/top1", "max")  # a MonitoredTask: picks best.ckpt
        self.loss_terms: Dict[str, Tensor] = {}  # NamesLossTerms: the last training step's, for NonFiniteGuard
        if isinstance(model, nn.Module):
            self.model = model
        else:
            kwargs = dict(model_args or {})
            self.model = create_model(model, pretrained=pretrained, num_classes=num_classes, **kwargs)
        n_out = num_classes or (self.model.num_classes if conforms(self.model, ClassifierModel) else None)
        if not n_out:
            raise ValueError(
                "ClassificationTask needs num_classes (or a ClassifierModel: num_classes, get_classifier())"
            )
        self.num_classes = int(n_out)
        if optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd'; got {optimizer!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1); got {ema_decay}")
        self.ema: Optional[AveragedModel] = None
        if ema_decay > 0:
            self._make_ema()
        self.mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            self.mixup = Mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                label_smoothing=label_smoothing,
                num_classes=self.num_classes,
            )
            self.soft_ce = SoftTargetCrossEntropy()
        top5 = min(5, self.num_classes)
        metrics = MetricCollection(
            {
                "top1": MulticlassAccuracy(self.num_classes, top_k=1, average="micro"),
                "top5": MulticlassAccuracy(self.num_classes, top_k=top5, average="micro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    # --- model --------------------------------------------------------------------------------

    def configure_model(self) -> None:
        """``compile=True`` (or a backend name, e.g. ``"aot_eager"``): ``torch.compile`` the network in place
        (``nn.Module.compile``: parameter names and checkpoints are unchanged), before the strategy wraps it."""
        compile_in_place(self.hparams.get("compile", False), self.model)

    def _make_ema(self) -> None:
        self.ema = AveragedModel(
            self.model, multi_avg_fn=get_ema_multi_avg_fn(self.hparams.ema_decay), use_buffers=True
        )
        self.ema.requires_grad_(False)  # updated by averaging, never by gradients (and DDP must not wait for them)

    @property
    def eval_model(self) -> nn.Module:
        """The weights evaluated: the EMA copy when enabled, else the trained model."""
        return self.ema.module if self.ema is not None else self.model

    def load_weights(self, source: str) -> None:
        """Load weights (ours, a Lightning .ckpt, or timm/torchvision) into the model; the EMA restarts from them."""
        load_pretrained(self.model, source)
        if self.ema is not None:
            self._make_ema()

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` -> logits ``(B, num_classes)`` of the evaluated weights."""
        return self.eval_model(x)

    # --- steps --------------------------------------------------------------------------------
    def training_step(self, batch: Tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.mixup is not None:
            x, soft = self.mixup(x, y)
            loss = self.soft_ce(self.model(x), soft)
        else:
            logits = self.model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
            self.log("train/top1", (logits.argmax(-1) == y).float().mean(), on_step=False, on_epoch=True)
        self.loss_terms = {"train/loss": loss}  # named by NonFiniteGuard if it is not finite
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # here, not in on_train_batch_end: that runs after the callbacks', so a checkpoint saved at a batch's end
        # (last_every_n_batches) would miss this batch's average and a resume from it would skip it
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def _eval_step(self, batch: Tuple[Tensor, Tensor], metrics: MetricCollection, stage: str) -> None:
        x, y = batch
        logits = self.eval_model(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True)
        metrics.update(logits, y)
        self.log_dict(metrics, prog_bar=True)

    def validation_step(self, batch: Tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: Tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """``images (B, C, H, W)`` or ``(images, ...)`` -> softmax ``(B, num_classes)`` of the evaluated weights
        (``(0, num_classes)`` for a batch of image files none of which could be read: ``images`` is None)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if x is None:
            return torch.zeros(0, self.num_classes)
        return self.eval_model(x).softmax(-1)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # read by create_model(pretrained=ckpt) and export: the head's size and what its outputs mean
        checkpoint["num_classes"] = self.num_classes
        checkpoint["class_names"] = datamodule_class_names(self, self.num_classes)

    # --- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        groups = param_groups_weight_decay(self.model, hp.weight_decay)
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=True)
        else:
            opt = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))  # also sets up the train loader
        steps_per_epoch = optimizer_steps_per_epoch(self.trainer, total)
        if hp.get("warmup_steps") is not None:
            warmup = min(total, int(hp.warmup_steps))
        else:
            warmup = min(total, int(round(hp.warmup_epochs * steps_per_epoch)))
        warmup = max(1, warmup)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, warmup, total, hp.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_callbacks(self):
        # the non-finite guard and RNG state for exact resume (unless the trainer has its own); predict over image
        # files (--data.init_args.predict_root) writes predictions.json (best.ckpt/last.ckpt: the CLI's RunCheckpoint)
        return [*default_callbacks(self._trainer), *default_prediction_writer(self._trainer)]
