"""Generation: FID / IS / KID of generated vs real images, classifier accuracy per class, and ``samples.png``.

The settings are the task's :class:`~vision_attn.tasks.generation.GenerationEvalConfig`. The feature extractor and
the classifier are built here, for this evaluation only; the model is not modified except for the EMA generator's
BatchNorm statistics when ``standing_stats_batches`` asks for them to be re-estimated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ...callbacks.sample_grids import grid_nrow, save_image_grid
from ...data.protocols import CIFARFormatData, LabelledImages
from ...metrics.generation import (
    ClassifierFeatures,
    InceptionFeatures,
    extract_features,
    generation_metrics_from_features,
    real_features,
)
from ...models import create_model
from ...models.protocols import conforms
from ...tasks.generation import GenerationEvalConfig, GenerationTask
from . import evaluate_task

__all__ = [
    "build_classifier",
    "build_feature_extractor",
    "classifier_accuracy",
    "evaluate_generation",
    "generated_batches",
    "sampling_generator",
]


def sampling_generator(task: GenerationTask) -> nn.Module:
    """The generator the evaluation samples from: the EMA copy if ``eval_generator="ema"`` and the model has one."""
    model = task.model
    if task.evaluation.eval_generator == "ema" and model.generator_ema is not None:
        return model.generator_ema
    return model.generator


@torch.no_grad()
def generated_batches(
    task: GenerationTask, gen: nn.Module, n: int, batch: int, seed: int, labels: Optional[Tensor] = None
) -> Iterator[Tensor]:
    """Batches of ``n`` generated images ``(b, 3, H, W)`` in [-1, 1]; classes cycle (balanced) unless ``labels (n,)``."""
    rng = torch.Generator(device=task.device).manual_seed(seed)
    if labels is None and task.num_classes:
        labels = torch.arange(n, device=task.device) % task.num_classes
    for i in range(0, n, batch):
        m = min(batch, n - i)
        yield task.model.sample(
            m, None if labels is None else labels[i : i + m], generator=rng, use_ema=gen is task.model.generator_ema
        )


def build_classifier(task: GenerationTask) -> ClassifierFeatures:
    """The configured classifier checkpoint as an extractor: images in [-1, 1] -> (penultimate features, logits)."""
    cfg = task.evaluation
    if not cfg.classifier:
        raise ValueError("GenerationEvalConfig: no classifier checkpoint configured (evaluation.classifier=PATH)")
    clf = create_model(
        cfg.classifier_model,
        pretrained=cfg.classifier,
        num_classes=task.data_classes or task.num_classes,
        **dict(cfg.classifier_args or {}),
    )
    mean, std = task.data_mean or (0.5, 0.5, 0.5), task.data_std or (0.5, 0.5, 0.5)
    return ClassifierFeatures(
        clf, mean, std, cache_id=f"classifier:{cfg.classifier_model}:{Path(cfg.classifier).resolve()}"
    )


def build_feature_extractor(cfg: GenerationEvalConfig, classifier: Optional[nn.Module] = None) -> nn.Module:
    """The FID extractor: the injected module, the classifier's features, or Inception (its weights checked first)."""
    if isinstance(cfg.feature_extractor, nn.Module):
        return cfg.feature_extractor
    if cfg.feature_extractor == "classifier":
        if classifier is None:
            raise ValueError("GenerationEvalConfig: feature_extractor='classifier' needs the classifier built first")
        return classifier
    return InceptionFeatures(cfg.inception_weights, cfg.inception_download)


def classifier_accuracy(
    task: GenerationTask, classifier: nn.Module, gen: nn.Module, class_names: Optional[Sequence[str]] = None
) -> Dict[str, float]:
    """Accuracy of ``classifier`` on images of ``gen`` w.r.t. their conditioning labels.

    Returns ``classifier_accuracy`` (mean over classes) and ``classifier_acc/<class>`` per class.
    """
    if not task.num_classes:
        raise ValueError("classifier accuracy needs a class-conditional GAN (num_classes > 0)")
    cfg, k, n = task.evaluation, task.num_classes, task.evaluation.classifier_n_per_class
    labels = torch.arange(k, device=task.device).repeat_interleave(n)
    preds = [
        classifier(images)[1].argmax(-1).cpu()
        for images in generated_batches(task, gen, len(labels), cfg.eval_batch_size, task.hparams.seed + 1, labels)
    ]
    correct = (torch.cat(preds) == labels.cpu()).float().view(k, n).mean(1)
    names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    out = {"classifier_accuracy": float(correct.mean())}
    out.update({f"classifier_acc/{names[c]}": float(correct[c]) for c in range(k)})
    return out


@evaluate_task.register
def evaluate_generation(
    task: GenerationTask, datamodule, trainer, split: str = "test", output_dir: Union[str, Path] = "."
) -> Dict[str, object]:
    """FID, IS (mean, std), KID (mean, std) of ``eval_n_samples`` generated images vs the ``split`` images.

    Also writes ``samples.png`` into ``output_dir`` and, with a ``classifier`` configured, adds the classifier
    accuracy of generated images per class. Real features are cached (see ``stats_cache_dir``).
    """
    cfg, seed = task.evaluation, task.hparams.seed
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = trainer.strategy.root_device if trainer is not None else task.device
    task.to(device).eval()
    datamodule.prepare_data()
    datamodule.setup("test" if split == "test" else "validate")
    task.read_normalisation(datamodule)
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    gen = sampling_generator(task)
    # the classifier serves the accuracy (conditional models) and / or the features
    use_classifier = cfg.classifier and (task.num_classes or cfg.feature_extractor == "classifier")
    classifier = build_classifier(task).to(device) if use_classifier else None
    extractor = build_feature_extractor(cfg, classifier).to(device)
    if cfg.standing_stats_batches and gen is task.model.generator_ema:
        task.model.recompute_ema_statistics(
            cfg.standing_stats_batches, cfg.eval_batch_size, torch.Generator(device=device).manual_seed(seed + 2)
        )
    n_real = min(cfg.eval_n_samples, len(loader.dataset))
    root = datamodule.root if conforms(datamodule, LabelledImages) else "."
    cache = Path(cfg.stats_cache_dir) if cfg.stats_cache_dir else Path(root) / "fid_stats"
    where = datamodule.dataset_dir if conforms(datamodule, CIFARFormatData) else None
    key = f"{type(datamodule).__name__}:{Path(where).resolve() if where else root}:{split}"
    real = real_features(
        extractor, lambda: ((task.to_unit_range(x.to(device)), y) for x, y in loader), key, n_real, cache, device
    )
    fake, logits = extract_features(
        extractor, generated_batches(task, gen, cfg.eval_n_samples, cfg.eval_batch_size, seed), device=device
    )
    metrics: Dict[str, object] = dict(generation_metrics_from_features(real, fake, logits, seed=seed))
    metrics.update(n_generated=len(fake), n_real=len(real), feature_dim=real.shape[1])
    metrics["feature_extractor"] = (
        cfg.feature_extractor if isinstance(cfg.feature_extractor, str) else type(extractor).__name__
    )
    if classifier is not None and task.num_classes:
        names = datamodule.classes if conforms(datamodule, LabelledImages) else None
        metrics.update(classifier_accuracy(task, classifier, gen, names))
    n = task.hparams.n_samples
    grid = task.model.sample(
        n,
        truncation=task.hparams.sample_truncation,
        generator=torch.Generator(device=device).manual_seed(seed),
        use_ema=gen is task.model.generator_ema,
    )
    save_image_grid(grid, out / "samples.png", nrow=grid_nrow(n, task.num_classes, max_classes=None))
    metrics["generator"] = "ema" if gen is task.model.generator_ema else "generator"
    return metrics
