"""Class-conditional (or unconditional) image generation with Lightning: SA-GAN's training loop.

Manual optimisation: per batch one discriminator step (hinge loss on real and generated images), and after every
``d_steps`` discriminator steps one generator step; TTUR (Adam ``betas=(0, 0.9)``, ``lr_d = 4 lr_g``); an EMA copy
of the generator (those settings are :class:`GanOptimConfig`); optional DiffAugment on everything D sees (the loss
and what D sees are :class:`~vision_attn.losses.GanCriterionConfig`). Works with ``--trainer.precision bf16-mixed`` and DDP
(``--trainer.strategy ddp_find_unused_parameters_true``: each backward uses only one of the two networks).
The step itself is :meth:`GenerationTask.gan_step`, usable without a Trainer (the benchmark times it).

Sample grids during training come from :class:`vision_attn.callbacks.SampleGrids` (added by the task);
FID / IS / KID and classifier accuracy from ``vision_attn.run.evaluate.generation`` with the settings of
:class:`GenerationEvalConfig`.

Note: Lightning counts every optimizer step in ``trainer.global_step`` (and ``max_steps``): with ``d_steps=1``
a batch is 2 steps (D and G). ``sample_every_n_steps`` and ``ema_start`` count generator steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, ClassVar, Dict, Iterator, Literal, Optional, Sequence, Tuple, Union

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..callbacks import default_callbacks
from ..callbacks.sample_grids import SampleGrids
from ..data.protocols import CIFARFormatData
from ..losses.gan import GanCriterionConfig
from ..models import compile_in_place, create_model, load_pretrained
from ..models.protocols import GanModel, check_protocol, conforms
from .options import MovedOptions, option_group

__all__ = ["GanCriterionConfig", "GanOptimConfig", "GenerationEvalConfig", "GenerationTask"]


@dataclasses.dataclass(frozen=True)
class GanOptimConfig:
    """How G and D are optimised and averaged (``model.init_args.optim`` of ``GenerationTask`` configs); the
    defaults are SA-GAN's.

    Args:
        lr_g, lr_d: Adam learning rates of G and D (TTUR: 1e-4 / 4e-4).
        betas: Adam betas of both (``(0, 0.9)``).
        d_steps: discriminator steps (each on a new batch) per generator step.
        ema_decay: decay of the generator EMA used for sampling and evaluation, in [0, 1).
        ema_start: generator steps before which the EMA simply copies G.
    """

    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: Tuple[float, float] = (0.0, 0.9)
    d_steps: int = 1
    ema_decay: float = 0.9999
    ema_start: int = 1000

    def __post_init__(self) -> None:
        where = "GanOptimConfig (model.init_args.optim)"
        for name, lr in (("lr_g", self.lr_g), ("lr_d", self.lr_d)):
            if not lr > 0:
                raise ValueError(f"{where}: {name} must be > 0; got {lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"{where}: betas must be two numbers in [0, 1); got {self.betas}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))  # a checkpoint's list, as a tuple
        if self.d_steps < 1:
            raise ValueError(f"{where}: d_steps must be >= 1; got {self.d_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"{where}: ema_decay must be in [0, 1); got {self.ema_decay}")
        if self.ema_start < 0:
            raise ValueError(f"{where}: ema_start must be >= 0; got {self.ema_start}")

    def to_hparams(self) -> Dict[str, Any]:
        """Plain values for checkpoints (read with ``weights_only=True``) and hparams.yaml."""
        return {**dataclasses.asdict(self), "betas": [float(b) for b in self.betas]}


@dataclasses.dataclass(frozen=True)
class GenerationEvalConfig:
    """How ``vision_attn.run.evaluate.generation`` evaluates a GAN (``model.init_args.evaluation`` in configs).

    Args:
        eval_n_samples: generated (and at most real) images for FID / IS / KID.
        eval_batch_size: batch size of sampling and feature extraction.
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
        standing_stats_batches: before evaluating the EMA generator, re-estimate its BatchNorm statistics over
            this many random batches (BigGAN's standing statistics; 0 = use the stored ones).
        eval_generator: ``"ema"`` (the EMA copy, when the model has one) or ``"generator"`` (the trained weights;
            a short run's EMA can lag behind G).
    """

    eval_n_samples: int = 10000
    eval_batch_size: int = 100
    feature_extractor: Union[str, nn.Module] = "inception"
    inception_weights: Optional[str] = None
    inception_download: bool = False
    classifier: Optional[str] = None
    classifier_model: str = "resnet10_narrow_cifar"
    classifier_args: Optional[Dict[str, Any]] = None
    classifier_n_per_class: int = 100
    stats_cache_dir: Optional[str] = None
    standing_stats_batches: int = 0
    eval_generator: Literal["ema", "generator"] = "ema"

    def __post_init__(self) -> None:
        where = "GenerationEvalConfig (model.init_args.evaluation)"
        if self.eval_generator not in ("ema", "generator"):
            raise ValueError(f"{where}: eval_generator must be 'ema' or 'generator'; got {self.eval_generator!r}")
        if isinstance(self.feature_extractor, str) and self.feature_extractor not in ("inception", "classifier"):
            raise ValueError(
                f"{where}: feature_extractor must be 'inception', 'classifier' or an nn.Module; "
                f"got {self.feature_extractor!r}"
            )
        if self.feature_extractor == "classifier" and not self.classifier:
            raise ValueError(
                f"{where}: feature_extractor='classifier' needs classifier=<checkpoint of a classifier "
                "trained on this data>; got classifier=None"
            )
        if self.eval_n_samples < 1 or self.eval_batch_size < 1 or self.classifier_n_per_class < 1:
            raise ValueError(
                f"{where}: eval_n_samples, eval_batch_size and classifier_n_per_class must be >= 1; got "
                f"{self.eval_n_samples}, {self.eval_batch_size}, {self.classifier_n_per_class}"
            )

    def to_hparams(self) -> Dict[str, Any]:
        """Plain values for checkpoints and hparams.yaml (an injected extractor module is left out)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # shallow: asdict copies modules
        if isinstance(self.feature_extractor, nn.Module):
            del out["feature_extractor"]
        return out


@contextlib.contextmanager
def _only_params_of(active, optimizers: Sequence) -> Iterator[None]:
    """Lightning's ``toggle_optimizer`` without a Trainer: only ``active``'s parameters require grad inside."""
    state: Dict[Tensor, bool] = {}
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                if p not in state:
                    state[p] = p.requires_grad
                    p.requires_grad = False
    for group in active.param_groups:
        for p in group["params"]:
            p.requires_grad = state[p]
    try:
        yield
    finally:
        for p, flag in state.items():
            p.requires_grad = flag


class GenerationTask(MovedOptions, pl.LightningModule):
    """Train a GAN from the registry (``sagan_32``, ``sagan_64``, ``sagan_128``).

    Args:
        model: a registered GAN name, or a ``SAGAN``-like module (Python use).
        model_args: architecture options for ``create_model`` (``ch``, ``g_attn_res``, ``hierarchical_z``, ...).
        num_classes: classes of the data (the CLI fills it from the datamodule).
        conditional: False trains an unconditional GAN (labels ignored) whatever the data's classes.
        optim: Adam for G and D (TTUR), discriminator steps per generator step and the generator EMA
            (:class:`GanOptimConfig`; SA-GAN's).
        criterion: the adversarial loss, DiffAugment and flips of real images
            (:class:`~vision_attn.losses.GanCriterionConfig`; SA-GAN's).
        sample_every_n_steps: write a sample grid (PNG under ``<log_dir>/samples``, TensorBoard image) every N
            generator steps and at the end of training (:class:`~vision_attn.callbacks.SampleGrids`); 0 = never.
        n_samples: images in that grid and in the evaluation's ``samples.png`` (fixed noise, cycling classes).
        sample_truncation: truncation for those grids (None = none).
        evaluation: settings of the FID / IS / KID evaluation (:class:`GenerationEvalConfig`).
        channels_last: keep G, D and the images in channels-last memory format (faster convolutions on CPU and
            on GPUs with tensor cores; about 1.3x per training step for the shapes quickstart on 2 CPU cores).
        seed: seed of the evaluation / grid noise.
    """

    # options that moved into a group (old name -> group): the CLI names the new place of one still given flat
    MOVED_OPTIONS: ClassVar[Dict[str, str]] = {
        **dict.fromkeys(("lr_g", "lr_d", "betas", "d_steps", "ema_decay", "ema_start"), "optim"),
        **dict.fromkeys(("loss", "diffaug", "real_flip"), "criterion"),
    }

    def __init__(
        self,
        model: Union[str, nn.Module] = "sagan_32",
        model_args: Optional[Dict[str, Any]] = None,
        num_classes: Optional[int] = None,
        conditional: bool = True,
        pretrained: Optional[str] = None,
        optim: GanOptimConfig = GanOptimConfig(),
        criterion: GanCriterionConfig = GanCriterionConfig(),
        sample_every_n_steps: int = 500,
        n_samples: int = 64,
        sample_truncation: Optional[float] = None,
        evaluation: GenerationEvalConfig = GenerationEvalConfig(),
        channels_last: bool = False,
        seed: int = 0,
        compile: Union[bool, str] = False,
    ) -> None:
        super().__init__()
        # plain dataclasses (not part of the state dict); a dict is a checkpoint's hyper-parameters or a YAML's group
        self.optim = option_group(GanOptimConfig, optim, "GenerationTask", "optim")
        self.criterion = option_group(GanCriterionConfig, criterion, "GenerationTask", "criterion")
        self.evaluation = option_group(GenerationEvalConfig, evaluation, "GenerationTask", "evaluation")
        groups = {"optim": self.optim, "criterion": self.criterion, "evaluation": self.evaluation}
        self.save_hyperparameters(ignore=[*groups] + (["model"] if isinstance(model, nn.Module) else []))
        # the groups as plain values (checkpoints load with weights_only=True, hparams.yaml dumps them)
        self.save_hyperparameters({**self.hparams, **{k: v.to_hparams() for k, v in groups.items()}})
        self.automatic_optimization = False
        # a MonitoredTask: no validation number picks a GAN, so best.ckpt holds the latest weights
        self.checkpoint_monitor: Optional[Tuple[str, str]] = None
        self.loss_terms: Dict[str, Tensor] = {}  # NamesLossTerms: the last step's, for NonFiniteGuard
        self.d_loss_fn, self.g_loss_fn, self.diffaug = self.criterion.build()
        self.data_classes = int(num_classes or 0)
        if isinstance(model, nn.Module):
            self.model = model
        else:
            n = self.data_classes if conditional else 0
            self.model = create_model(model, pretrained=pretrained, num_classes=n, **dict(model_args or {}))
        check_protocol(self.model, GanModel, "GenerationTask's model")
        self.num_classes = int(self.model.num_classes)
        if conditional and self.num_classes == 0 and self.data_classes > 0 and not isinstance(model, nn.Module):
            raise ValueError("GenerationTask: conditional=True but the model has no classes")
        self.g_steps = 0  # generator steps taken (saved in checkpoints)
        # images come normalised by the datamodule; (mean, std) maps them back to [-1, 1] (see read_normalisation)
        self.data_mean: Optional[Tuple[float, ...]] = None
        self.data_std: Optional[Tuple[float, ...]] = None

    # --- data ---------------------------------------------------------------------------------

    def configure_model(self) -> None:
        """``compile=True`` (or a backend name, e.g. ``"aot_eager"``): ``torch.compile`` the network in place
        (``nn.Module.compile``: parameter names and checkpoints are unchanged), before the strategy wraps it."""
        compile_in_place(self.hparams.get("compile", False), self.model.generator, self.model.discriminator)

    def read_normalisation(self, datamodule) -> None:
        """Take a :class:`~vision_attn.data.protocols.CIFARFormatData`'s ``spec.mean`` / ``spec.std`` for
        :meth:`to_unit_range` (other data: images are taken as they come, in [-1, 1])."""
        if conforms(datamodule, CIFARFormatData):
            self.data_mean, self.data_std = tuple(datamodule.spec.mean), tuple(datamodule.spec.std)

    def to_unit_range(self, images: Tensor) -> Tensor:
        """Datamodule-normalised images ``(B, 3, H, W)`` -> [-1, 1] (identity when mean = std = 0.5, as the shapes)."""
        if self.data_mean is None:
            return images
        mean = images.new_tensor(self.data_mean).view(1, -1, 1, 1)
        std = images.new_tensor(self.data_std).view(1, -1, 1, 1)
        return (images * std + mean) * 2 - 1

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self._trainer is not None else None  # _trainer: None outside a Trainer
        if dm is not None:
            self.read_normalisation(dm)
            if stage == "fit" and conforms(dm, CIFARFormatData) and dm.augment:
                raise ValueError(
                    f"GenerationTask: {type(dm).__name__} has augment=True: its zero-padded random crops would teach "
                    "the generator black borders. Set --data.init_args.augment false (the task flips real images "
                    "itself, real_flip=True)"
                )

    def on_fit_start(self) -> None:
        # the strategy has wrapped the module by now: ask the DDP wrapper itself (public) how it was built
        wrapped = self.trainer.strategy.model
        if (
            self.trainer.world_size > 1
            and isinstance(wrapped, DistributedDataParallel)
            and not wrapped.find_unused_parameters
        ):
            raise ValueError(
                "GenerationTask under DDP needs find_unused_parameters (each backward uses G or D only): "
                "use --trainer.strategy ddp_find_unused_parameters_true"
            )
        if self.hparams.channels_last:
            self.model.to(memory_format=torch.channels_last)

    # --- model --------------------------------------------------------------------------------
    def load_weights(self, source: str) -> None:
        """Load a checkpoint (our Lightning .ckpt or a SAGAN state dict) into the model, EMA generator included."""
        load_pretrained(self.model, source)

    def forward(self, z: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """``z (B, z_dim)``, ``labels (B,)`` -> images ``(B, 3, H, W)`` from the sampling (EMA) generator."""
        return self.model.sampler(z, labels if self.num_classes else None)

    def _random_labels(self, n: int) -> Optional[Tensor]:
        return torch.randint(0, self.num_classes, (n,), device=self.device) if self.num_classes else None

    # --- training -----------------------------------------------------------------------------
    def gan_step(
        self,
        real: Tensor,
        labels: Optional[Tensor],
        opt_g,
        opt_d,
        *,
        generator_step: bool = True,
        backward: Optional[Callable[[Tensor], None]] = None,
    ) -> Dict[str, Tensor]:
        """One discriminator step and, if ``generator_step``, one generator step and the EMA update.

        Args:
            real: real images ``(B, 3, H, W)`` in [-1, 1]; labels: their classes ``(B,)`` (ignored if unconditional).
            opt_g, opt_d: the optimizers of :meth:`configure_optimizers` (plain or Lightning-wrapped).
            backward: how to back-propagate a loss (``self.manual_backward`` under a Trainer); default
                ``loss.backward()``, so the step runs without a Trainer.

        Returns detached scalars ``d_loss``, ``d_real``, ``d_fake`` (mean D logits) and, after a G step, ``g_loss``.
        """
        backward = backward or Tensor.backward
        optimizers = (opt_g, opt_d)
        if self.hparams.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        if self.criterion.real_flip:
            flip = torch.rand(real.shape[0], device=real.device) < 0.5
            real = torch.where(flip[:, None, None, None], real.flip(-1), real)
        labels = labels.long() if self.num_classes else None
        B, G, D, z_dim = real.shape[0], self.model.generator, self.model.discriminator, self.model.z_dim

        # discriminator: real vs generated (no gradient into G)
        with _only_params_of(opt_d, optimizers):
            with torch.no_grad():
                y_fake = self._random_labels(B)
                fake = G(torch.randn(B, z_dim, device=self.device), y_fake)
            d_real = D(self.diffaug(real), labels)
            d_fake = D(self.diffaug(fake.detach()), y_fake)
            d_loss = self.d_loss_fn(d_real, d_fake)
            self.loss_terms = {"train/d_loss": d_loss}  # named by NonFiniteGuard if it is not finite
            opt_d.zero_grad(set_to_none=True)
            backward(d_loss)
            opt_d.step()
        out = {
            "d_loss": d_loss.detach().float(),
            "d_real": d_real.detach().float().mean(),
            "d_fake": d_fake.detach().float().mean(),
        }
        if not generator_step:
            return out

        # generator: fool D (D's weights frozen, as Lightning's toggle_optimizer does)
        with _only_params_of(opt_g, optimizers):
            y_gen = self._random_labels(B)
            z = torch.randn(B, z_dim, device=self.device)
            g_loss = self.g_loss_fn(D(self.diffaug(G(z, y_gen)), y_gen))
            self.loss_terms = {"train/g_loss": g_loss}
            opt_g.zero_grad(set_to_none=True)
            backward(g_loss)
            opt_g.step()
        out["g_loss"] = g_loss.detach().float()
        self.g_steps += 1
        if self.model.generator_ema is not None:
            decay = 0.0 if self.g_steps <= self.optim.ema_start else self.optim.ema_decay
            self.model.update_ema(decay, z, y_gen)  # the forward keeps the EMA's own BatchNorm statistics current
        return out

    def training_step(self, batch: Tuple[Tensor, Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real, labels = batch
        losses = self.gan_step(
            self.to_unit_range(real),
            labels,
            opt_g,
            opt_d,
            generator_step=(batch_idx + 1) % self.optim.d_steps == 0,
            backward=self.manual_backward,
        )
        self.log_dict({f"train/{k}": losses[k] for k in ("d_loss", "d_real", "d_fake")}, prog_bar=False)
        if "g_loss" in losses:
            self.log("train/g_loss", losses["g_loss"], prog_bar=True)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["generator_steps"] = self.g_steps

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        self.g_steps = int(checkpoint.get("generator_steps", 0))

    def configure_optimizers(self):
        opt = self.optim
        opt_g = torch.optim.Adam(self.model.generator.parameters(), lr=opt.lr_g, betas=opt.betas)
        opt_d = torch.optim.Adam(self.model.discriminator.parameters(), lr=opt.lr_d, betas=opt.betas)
        return [opt_g, opt_d]

    def configure_callbacks(self):
        # the non-finite guard and RNG state for exact resume (unless the trainer has its own), sample grids
        callbacks = default_callbacks(self._trainer)
        hp = self.hparams
        if hp.sample_every_n_steps:
            callbacks.append(SampleGrids(hp.sample_every_n_steps, hp.n_samples, hp.sample_truncation, hp.seed))
        return callbacks
