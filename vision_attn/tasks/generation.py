"""Class-conditional (or unconditional) image generation with Lightning: SA-GAN's training loop and evaluation.

Manual optimisation: per batch one discriminator step (hinge loss on real and generated images), and after every
``d_steps`` discriminator steps one generator step; TTUR (Adam ``betas=(0, 0.9)``, ``lr_d = 4 lr_g``); an EMA copy
of the generator; optional DiffAugment on everything D sees. Works with ``--trainer.precision bf16-mixed`` and DDP
(``--trainer.strategy ddp_find_unused_parameters_true``: each backward uses only one of the two networks).

Note: Lightning counts every optimizer step in ``trainer.global_step`` (and ``max_steps``): with ``d_steps=1``
a batch is 2 steps (D and G). ``sample_every_n_steps`` and ``ema_start`` count generator steps.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.strategies import DDPStrategy
from torch import Tensor, nn

from ..losses.gan import DiffAugment, gan_losses
from ..metrics.generation import (
    ClassifierFeatures,
    InceptionFeatures,
    extract_features,
    generation_metrics_from_features,
    real_features,
)
from ..models import create_model, load_pretrained

__all__ = ["GenerationTask", "save_image_grid"]


def save_image_grid(images: Tensor, path: Union[str, Path], nrow: Optional[int] = None) -> Path:
    """Save images ``(N, 3, H, W)`` in [-1, 1] as one PNG grid (``nrow`` per row; default ~square)."""
    from torchvision.utils import save_image

    if images.dim() != 4:
        raise ValueError(f"images must be (N, 3, H, W); got {tuple(images.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    save_image((images.float().clamp(-1, 1) + 1) / 2, path, nrow=nrow, padding=2)
    return path


class GenerationTask(pl.LightningModule):
    """Train and evaluate a GAN from the registry (``sagan_32``, ``sagan_64``, ``sagan_128``).

    Args:
        model: a registered GAN name, or a ``SAGAN``-like module (Python use).
        model_args: architecture options for ``create_model`` (``ch``, ``g_attn_res``, ``hierarchical_z``, ...).
        num_classes: classes of the data (the CLI fills it from the datamodule).
        conditional: False trains an unconditional GAN (labels ignored) whatever the data's classes.
        lr_g, lr_d, betas: Adam for G and D (TTUR: SAGAN's 1e-4 / 4e-4, ``betas=(0, 0.9)``).
        d_steps: discriminator steps (each on a new batch) per generator step.
        loss: ``"hinge"`` (SAGAN) or ``"nonsaturating"``.
        ema_decay: decay of the generator EMA used for sampling and evaluation; ema_start: generator steps
            before which the EMA simply copies G.
        diffaug: DiffAugment policy (``"color,translation,cutout"``) for small data; None = off.
        real_flip: random horizontal flips of real images (the datamodule must have ``augment=False``: its
            zero-padded crops would teach G black borders; the task says so if not).
        sample_every_n_steps: write a sample grid (PNG under ``<log_dir>/samples``, TensorBoard image) every N
            generator steps; 0 = never. n_samples: images in that grid (fixed noise, cycling classes).
        sample_truncation: truncation for those grids (None = none).
        eval_n_samples: generated (and at most real) images for FID / IS / KID in :meth:`run_evaluation`.
        eval_batch_size: batch size of sampling and feature extraction there.
        feature_extractor: ``"inception"`` (standard; weights from ``inception_weights`` or torch's cache),
            ``"classifier"`` (the ``classifier`` checkpoint's penultimate features; NOT comparable to Inception
            numbers) or an ``nn.Module`` (images in [-1, 1] -> features or (features, logits)).
        inception_weights: local path of torch-fidelity's Inception weights (offline use).
        inception_download: let torch-fidelity download them when missing (online machines).
        classifier: checkpoint of a classifier trained on the same data (e.g. the quickstart ResNet): adds
            ``classifier_accuracy`` (of generated images w.r.t. their conditioning labels) to the evaluation.
        classifier_model, classifier_args: its registered name and architecture options.
        classifier_n_per_class: generated images per class for that accuracy.
        stats_cache_dir: where real-image features are cached (default ``<datamodule.root>/fid_stats``).
        standing_stats_batches: before evaluating, re-estimate the sampling generator's BatchNorm statistics over
            this many random batches (BigGAN's standing statistics; 0 = use the stored ones).
        eval_generator: ``"ema"`` (the EMA copy, when the model has one) or ``"generator"`` (the trained weights)
            for :meth:`run_evaluation` (a short run's EMA can lag behind G).
        channels_last: keep G, D and the images in channels-last memory format (faster convolutions on CPU and
            on GPUs with tensor cores; about 1.3x per training step for the shapes quickstart on 2 CPU cores).
        seed: seed of the evaluation / grid noise.
    """

    def __init__(
        self,
        model: Union[str, nn.Module] = "sagan_32",
        model_args: Optional[Dict[str, Any]] = None,
        num_classes: Optional[int] = None,
        conditional: bool = True,
        pretrained: Optional[str] = None,
        lr_g: float = 1e-4,
        lr_d: float = 4e-4,
        betas: Tuple[float, float] = (0.0, 0.9),
        d_steps: int = 1,
        loss: str = "hinge",
        ema_decay: float = 0.9999,
        ema_start: int = 1000,
        diffaug: Optional[str] = None,
        real_flip: bool = True,
        sample_every_n_steps: int = 500,
        n_samples: int = 64,
        sample_truncation: Optional[float] = None,
        eval_n_samples: int = 10000,
        eval_batch_size: int = 100,
        feature_extractor: Union[str, nn.Module] = "inception",
        inception_weights: Optional[str] = None,
        inception_download: bool = False,
        classifier: Optional[str] = None,
        classifier_model: str = "resnet10_narrow_cifar",
        classifier_args: Optional[Dict[str, Any]] = None,
        classifier_n_per_class: int = 100,
        stats_cache_dir: Optional[str] = None,
        standing_stats_batches: int = 0,
        eval_generator: str = "ema",
        channels_last: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=[k for k, v in (("model", model), ("feature_extractor", feature_extractor)) if isinstance(v, nn.Module)])
        self.automatic_optimization = False
        if eval_generator not in ("ema", "generator"):
            raise ValueError(f"eval_generator must be 'ema' or 'generator'; got {eval_generator!r}")
        if d_steps < 1:
            raise ValueError(f"d_steps must be >= 1; got {d_steps}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1); got {ema_decay}")
        if isinstance(feature_extractor, str) and feature_extractor not in ("inception", "classifier"):
            raise ValueError(f"feature_extractor must be 'inception', 'classifier' or an nn.Module; got {feature_extractor!r}")
        if feature_extractor == "classifier" and not classifier:
            raise ValueError("feature_extractor='classifier' needs classifier=<checkpoint of a classifier trained on this data>")
        self.d_loss_fn, self.g_loss_fn = gan_losses(loss)
        self.data_classes = int(num_classes or 0)
        if isinstance(model, nn.Module):
            self.model = model
        else:
            n = self.data_classes if conditional else 0
            self.model = create_model(model, pretrained=pretrained, num_classes=n, **dict(model_args or {}))
        self.num_classes = int(getattr(self.model, "num_classes", 0))
        if conditional and self.num_classes == 0 and self.data_classes > 0 and not isinstance(model, nn.Module):
            raise ValueError("conditional=True but the model has no classes")
        self.diffaug = DiffAugment(diffaug)
        self.g_steps = 0  # generator steps taken (saved in checkpoints)
        # evaluation helpers are kept out of the state dict (plain attributes, not submodules)
        self.__dict__["_extractor"] = feature_extractor if isinstance(feature_extractor, nn.Module) else None
        self.__dict__["_classifier"] = None
        # images come normalised by the datamodule; (mean, std) maps them back to [-1, 1] (set in setup)
        self.data_mean: Optional[Tuple[float, ...]] = None
        self.data_std: Optional[Tuple[float, ...]] = None

    # --- data ---------------------------------------------------------------------------------
    def _read_normalisation(self, datamodule) -> None:
        spec = getattr(datamodule, "spec", None)
        if spec is not None and getattr(spec, "mean", None) is not None:
            self.data_mean, self.data_std = tuple(spec.mean), tuple(spec.std)

    def to_unit_range(self, images: Tensor) -> Tensor:
        """Datamodule-normalised images ``(B, 3, H, W)`` -> [-1, 1] (identity when mean = std = 0.5, as the shapes)."""
        if self.data_mean is None:
            return images
        mean = images.new_tensor(self.data_mean).view(1, -1, 1, 1)
        std = images.new_tensor(self.data_std).view(1, -1, 1, 1)
        return (images * std + mean) * 2 - 1

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None:
            self._read_normalisation(dm)
            if stage == "fit" and getattr(dm, "augment", False):
                raise ValueError(
                    f"GenerationTask: {type(dm).__name__} has augment=True: its zero-padded random crops would teach "
                    "the generator black borders. Set --data.init_args.augment false (the task flips real images "
                    "itself, real_flip=True)"
                )
        if stage == "fit":
            strategy = self.trainer.strategy
            if isinstance(strategy, DDPStrategy) and strategy.num_processes * strategy.num_nodes > 1:
                if not strategy._ddp_kwargs.get("find_unused_parameters", False):
                    raise ValueError(
                        "GenerationTask under DDP needs find_unused_parameters (each backward uses G or D only): "
                        "use --trainer.strategy ddp_find_unused_parameters_true"
                    )

    def on_fit_start(self) -> None:
        if self.hparams.channels_last:
            self.model.to(memory_format=torch.channels_last)

    # --- model --------------------------------------------------------------------------------
    def load_weights(self, source: str) -> None:
        """Load a checkpoint (our Lightning .ckpt or a SAGAN state dict) into the model, EMA generator included."""
        load_pretrained(self.model, source)

    def forward(self, z: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """``z (B, z_dim)``, ``labels (B,)`` -> images ``(B, 3, H, W)`` from the sampling (EMA) generator, in eval mode."""
        g = self.model.sampler
        return g(z, labels if self.num_classes else None)

    def _random_labels(self, n: int) -> Optional[Tensor]:
        return torch.randint(0, self.num_classes, (n,), device=self.device) if self.num_classes else None

    # --- training -----------------------------------------------------------------------------
    def training_step(self, batch: Tuple[Tensor, Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real, labels = batch
        real = self.to_unit_range(real)
        if self.hparams.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        if self.hparams.real_flip:
            flip = torch.rand(real.shape[0], device=real.device) < 0.5
            real = torch.where(flip[:, None, None, None], real.flip(-1), real)
        labels = labels.long() if self.num_classes else None
        B, G, D = real.shape[0], self.model.generator, self.model.discriminator
        z_dim = self.model.z_dim

        # discriminator: real vs generated (no gradient into G)
        self.toggle_optimizer(opt_d)
        with torch.no_grad():
            y_fake = self._random_labels(B)
            fake = G(torch.randn(B, z_dim, device=self.device), y_fake)
        d_real = D(self.diffaug(real), labels)
        d_fake = D(self.diffaug(fake.detach()), y_fake)
        d_loss = self.d_loss_fn(d_real, d_fake)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        self.log_dict({"train/d_loss": d_loss.detach().float(), "train/d_real": d_real.detach().float().mean(),
                       "train/d_fake": d_fake.detach().float().mean()}, prog_bar=False)

        if (batch_idx + 1) % self.hparams.d_steps:
            return
        # generator: fool D (D's weights are frozen by the toggle)
        self.toggle_optimizer(opt_g)
        y_gen = self._random_labels(B)
        z = torch.randn(B, z_dim, device=self.device)
        gen = G(z, y_gen)
        g_loss = self.g_loss_fn(D(self.diffaug(gen), y_gen))
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.log("train/g_loss", g_loss.detach().float(), prog_bar=True)
        self.g_steps += 1
        if self.model.generator_ema is not None:
            decay = 0.0 if self.g_steps <= self.hparams.ema_start else self.hparams.ema_decay
            self.model.update_ema(decay, z, y_gen)  # the forward keeps the EMA's own BatchNorm statistics current
        every = self.hparams.sample_every_n_steps
        if every and self.g_steps % every == 0:
            self.write_samples()

    @torch.no_grad()
    def sample_grid_images(self) -> Tensor:
        """The fixed-noise grid: ``n_samples`` images ``(n, 3, H, W)`` in [-1, 1], classes cycling."""
        g = torch.Generator(device=self.device).manual_seed(self.hparams.seed)
        return self.model.sample(self.hparams.n_samples, truncation=self.hparams.sample_truncation, generator=g)

    def write_samples(self) -> Optional[Path]:
        """Write the grid as ``<log_dir>/samples/step_XXXXXX.png`` and a TensorBoard image (rank 0 only)."""
        if self._trainer is None:
            return None
        root = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # a broadcast under DDP: every rank asks
        if not self.trainer.is_global_zero:
            return None
        with torch.autocast(self.device.type, enabled=False):
            images = self.sample_grid_images()
        path = save_image_grid(images, root / "samples" / f"step_{self.g_steps:06d}.png",
                               nrow=self.num_classes if self.num_classes and self.hparams.n_samples % self.num_classes == 0 and self.num_classes <= 16 else None)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                from torchvision.utils import make_grid

                grid = make_grid((images.float().clamp(-1, 1) + 1) / 2, nrow=int(math.ceil(math.sqrt(len(images)))))
                logger.experiment.add_image("samples", grid, self.g_steps)
        return path

    def on_train_end(self) -> None:
        if self.hparams.sample_every_n_steps:
            self.write_samples()

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["generator_steps"] = self.g_steps

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        self.g_steps = int(checkpoint.get("generator_steps", 0))

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = torch.optim.Adam(self.model.generator.parameters(), lr=hp.lr_g, betas=tuple(float(b) for b in hp.betas))
        opt_d = torch.optim.Adam(self.model.discriminator.parameters(), lr=hp.lr_d, betas=tuple(float(b) for b in hp.betas))
        return [opt_g, opt_d]

    def configure_callbacks(self):
        # last.ckpt (and the latest epoch's) under the run's log directory; GANs have no validation metric
        return [ModelCheckpoint(filename="{epoch}-{step}", save_last=True, save_top_k=1)]

    # --- evaluation ---------------------------------------------------------------------------
    def _load_classifier(self) -> nn.Module:
        if self._classifier is None:
            hp = self.hparams
            if not hp.classifier:
                raise ValueError("no classifier checkpoint configured (classifier=PATH)")
            n = self.data_classes or self.num_classes
            clf = create_model(hp.classifier_model, pretrained=hp.classifier, num_classes=n, **dict(hp.classifier_args or {}))
            mean, std = self.data_mean or (0.5, 0.5, 0.5), self.data_std or (0.5, 0.5, 0.5)
            self.__dict__["_classifier"] = ClassifierFeatures(clf, mean, std, cache_id=f"classifier:{hp.classifier_model}:{Path(hp.classifier).resolve()}").to(self.device)
        return self._classifier

    def feature_extractor_module(self) -> nn.Module:
        """The extractor of :meth:`run_evaluation` (built on first use; the Inception one checks its weights first)."""
        if self._extractor is None:
            hp = self.hparams
            if hp.feature_extractor == "classifier":
                self.__dict__["_extractor"] = self._load_classifier()
            else:
                self.__dict__["_extractor"] = InceptionFeatures(hp.inception_weights, hp.inception_download).to(self.device)
        return self._extractor

    @torch.no_grad()
    def _generated(self, n: int, batch: int, seed: int, labels: Optional[Tensor] = None):
        """Yield batches of generated images in [-1, 1]; classes cycle (balanced) unless ``labels (n,)`` is given."""
        g = torch.Generator(device=self.device).manual_seed(seed)
        if labels is None and self.num_classes:
            labels = torch.arange(n, device=self.device) % self.num_classes
        for i in range(0, n, batch):
            m = min(batch, n - i)
            y = None if labels is None else labels[i:i + m]
            yield self.model.sample(m, labels=y, generator=g)

    def classifier_accuracy(self, n_per_class: Optional[int] = None, class_names: Optional[Sequence[str]] = None) -> Dict[str, float]:
        """Accuracy of the configured classifier on generated images w.r.t. their conditioning labels.

        Returns ``classifier_accuracy`` (mean over classes) and ``classifier_acc/<class>`` per class.
        """
        if not self.num_classes:
            raise ValueError("classifier accuracy needs a class-conditional GAN (num_classes > 0)")
        n_per_class = n_per_class or self.hparams.classifier_n_per_class
        clf = self._load_classifier()
        labels = torch.arange(self.num_classes, device=self.device).repeat_interleave(n_per_class)
        preds = []
        for i, images in enumerate(self._generated(len(labels), self.hparams.eval_batch_size, self.hparams.seed + 1, labels)):
            preds.append(clf(images)[1].argmax(-1).cpu())
        correct = (torch.cat(preds) == labels.cpu()).float().view(self.num_classes, n_per_class).mean(1)
        names = list(class_names) if class_names is not None else [str(c) for c in range(self.num_classes)]
        out = {"classifier_accuracy": float(correct.mean())}
        out.update({f"classifier_acc/{names[c]}": float(correct[c]) for c in range(self.num_classes)})
        return out

    def run_evaluation(self, datamodule, trainer, split: str = "test", output_dir: Union[str, Path] = ".") -> Dict[str, float]:
        ema = self.model.generator_ema
        if self.hparams.eval_generator == "generator":
            self.model.generator_ema = None  # sample() then uses the trained generator
        try:
            metrics = self._run_evaluation(datamodule, trainer, split, output_dir)
        finally:
            self.model.generator_ema = ema
        metrics["generator"] = "ema" if ema is not None and self.hparams.eval_generator == "ema" else "generator"
        return metrics

    def _run_evaluation(self, datamodule, trainer, split: str, output_dir: Union[str, Path]) -> Dict[str, float]:
        """FID, IS (mean, std), KID (mean, std) of ``eval_n_samples`` generated images vs the ``split`` images.

        Also writes ``samples.png`` into ``output_dir`` and, with a ``classifier`` configured, adds the classifier
        accuracy of generated images per class. Real features are cached (see ``stats_cache_dir``).
        """
        hp = self.hparams
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        device = trainer.strategy.root_device if trainer is not None else self.device
        self.to(device).eval()
        datamodule.prepare_data()
        datamodule.setup("test" if split == "test" else "validate")
        self._read_normalisation(datamodule)
        loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
        extractor = self.feature_extractor_module().to(device)
        if hp.standing_stats_batches and self.model.generator_ema is not None:
            self.model.recompute_ema_statistics(hp.standing_stats_batches, hp.eval_batch_size,
                                                torch.Generator(device=device).manual_seed(hp.seed + 2))
        n_real = min(hp.eval_n_samples, len(loader.dataset))
        root = getattr(datamodule, "root", ".")
        cache = Path(hp.stats_cache_dir) if hp.stats_cache_dir else Path(root) / "fid_stats"
        where = getattr(datamodule, "dataset_dir", None)
        key = f"{type(datamodule).__name__}:{Path(where).resolve() if where else root}:{split}"
        real = real_features(extractor, lambda: ((self.to_unit_range(x.to(device)), y) for x, y in loader), key, n_real, cache, device)
        fake, logits = extract_features(extractor, self._generated(hp.eval_n_samples, hp.eval_batch_size, hp.seed), device=device)
        metrics = generation_metrics_from_features(real, fake, logits, seed=hp.seed)
        name = hp.get("feature_extractor") if isinstance(hp.get("feature_extractor"), str) else type(extractor).__name__
        metrics.update(n_generated=len(fake), n_real=len(real), feature_dim=real.shape[1])
        metrics["feature_extractor"] = name
        if hp.classifier and self.num_classes:
            metrics.update(self.classifier_accuracy(class_names=getattr(datamodule, "classes", None)))
        save_image_grid(self.sample_grid_images(), out / "samples.png",
                        nrow=self.num_classes if self.num_classes and hp.n_samples % max(1, self.num_classes) == 0 else None)
        return metrics
