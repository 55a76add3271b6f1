"""SA-GAN (Zhang et al. 2019): residual generator and projection discriminator with self-attention on the core.

Generator: ``z (B, z_dim)`` -> linear -> ``4 x 4`` map -> residual up-sampling blocks (BatchNorm, class-conditional
when ``num_classes > 0``) -> :class:`~vision_attn.layers.NonLocalBlock2d` at ``g_attn_res`` -> BN-ReLU-conv-tanh.
With ``hierarchical_z`` (BigGAN) ``z`` is cut into one chunk for the linear layer and one per block, and each chunk
conditions its block's BatchNorm together with the class embedding.

Discriminator: residual down-sampling blocks, :class:`~vision_attn.layers.NonLocalBlock2d` at ``d_attn_res``, ReLU,
global sum pooling, a linear output plus the projection term ``<embed(y), h>`` (Miyato & Koyama 2018).

Attention as SAGAN's ``non_local.py`` (and BigGAN-PyTorch's ``Attention``): softmax of the raw ``q . k`` (no
``1/sqrt(d)``), keys / values 2x2 max-pooled, C/8 query / key and C/2 value channels, ``gamma`` starting at 0.
Spectral norm on every conv / linear / embedding weight of G and D (the four 1x1 attention convs included) but G's
class embedding (BigGAN: "SN on G's embedding seems to randomly cripple G"); orthogonal init (BigGAN). Layouts follow the SAGAN / BigGAN reference code: ``sagan_128`` is the paper's
ImageNet model (``ch=64``, G widths ``16,16,8,4,2,1 x ch``, attention at 32 x 32 in G and D).
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .hub import PretrainedMixin
from .registry import register_model
from .sagan_nets import Discriminator, Generator, truncated_normal

__all__ = ["Generator", "Discriminator", "SAGAN", "sagan_32", "sagan_64", "sagan_128", "truncated_normal"]


class SAGAN(PretrainedMixin, nn.Module):
    """Generator, discriminator and the generator's EMA copy (``generator_ema``, used by :meth:`sample`).

    Args:
        img_size, num_classes, z_dim, hierarchical_z: shared by G and D (0 classes = unconditional).
        g_ch, g_mults, g_attn_res, d_ch, d_mults, d_downsample, d_attn_res: see :class:`Generator` and
            :class:`Discriminator`.
        attn_kv_pool, attn_scale: both attentions' key / value pooling and score scale (default SAGAN's: 2, 1.0).
        ema: keep ``generator_ema`` (updated by :meth:`update_ema`; the training task does this).
    """

    def __init__(
        self,
        img_size: int = 32,
        num_classes: int = 0,
        z_dim: int = 128,
        hierarchical_z: bool = False,
        g_ch: int = 64,
        g_mults: Sequence[int] = (4, 4, 4, 4),
        g_attn_res: Optional[int] = 16,
        d_ch: int = 64,
        d_mults: Sequence[int] = (4, 4, 4, 4),
        d_downsample: Optional[Sequence[bool]] = None,
        d_attn_res: Optional[int] = 16,
        embed_dim: int = 128,
        attn_kv_pool: int = 2,
        attn_scale: Optional[float] = 1.0,
        ema: bool = True,
    ) -> None:
        super().__init__()
        self.img_size, self.num_classes, self.z_dim = img_size, num_classes, z_dim
        attn = (attn_kv_pool, attn_scale)
        self.generator = Generator(
            img_size, g_ch, g_mults, z_dim, num_classes, embed_dim, hierarchical_z, g_attn_res, *attn
        )
        self.discriminator = Discriminator(img_size, d_ch, d_mults, d_downsample, num_classes, d_attn_res, *attn)
        self.generator_ema: Optional[Generator] = None
        if ema:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)

    def forward(self, z: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """``z (B, z_dim)``, ``labels (B,)`` -> images ``(B, 3, H, W)`` from the trained (non-EMA) generator."""
        return self.generator(z, labels)

    @property
    def sampler(self) -> Generator:
        """The generator :meth:`sample` uses: the EMA copy when present."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def num_classes_in_state_dict(self, state_dict) -> int:
        """The class count a SAGAN state dict was trained with: its generator's class embedding rows (0: none)."""
        emb = next((v for k, v in state_dict.items() if k.startswith("generator.embed.") and v.dim() == 2), None)
        return 0 if emb is None else int(emb.shape[0])

    @torch.no_grad()
    def update_ema(self, decay: float, z: Optional[Tensor] = None, labels: Optional[Tensor] = None) -> None:
        """``ema <- decay * ema + (1 - decay) * G`` for the parameters.

        The EMA keeps its own buffers: with ``z (B, z_dim)`` (and ``labels (B,)``) it then runs one forward in train
        mode, so its BatchNorm statistics follow the EMA weights and its spectral-norm vectors power-iterate on
        them (copying G's statistics would mismatch the averaged weights and shift the samples' colours).
        """
        if self.generator_ema is None:
            raise RuntimeError("this SAGAN was built with ema=False: there is no generator_ema to update")
        for p_ema, p in zip(self.generator_ema.parameters(), self.generator.parameters()):
            p_ema.lerp_(p.detach().to(p_ema.dtype), 1.0 - decay)
        if z is not None:
            was_training = self.generator_ema.training
            self.generator_ema.train()
            try:
                self.generator_ema(z, labels)
            finally:
                self.generator_ema.train(was_training)

    @torch.no_grad()
    def recompute_ema_statistics(
        self, n_batches: int = 20, batch_size: int = 64, generator: Optional[torch.Generator] = None
    ) -> None:
        """BigGAN's "standing statistics": the sampler's BatchNorm statistics re-estimated as the plain average over
        ``n_batches`` random batches in train mode (classes uniform). Use on checkpoints whose EMA statistics are stale."""
        g = self.sampler
        device = next(g.parameters()).device
        bns = [m for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [bn.momentum for bn in bns]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average
        was_training = g.training
        g.train()
        try:
            for _ in range(n_batches):
                z = torch.randn(batch_size, self.z_dim, generator=generator, device=device)
                y = (
                    torch.randint(0, self.num_classes, (batch_size,), generator=generator, device=device)
                    if self.num_classes
                    else None
                )
                g(z, y)
        finally:
            for bn, m in zip(bns, momenta):
                bn.momentum = m
            g.train(was_training)

    def make_labels(self, n: int, labels=None, device=None) -> Optional[Tensor]:
        """``labels``: None (conditional models: classes ``0, 1, ..., 0, 1, ...`` cycling), an int (all one class)
        or a sequence / tensor of ``n`` ints -> ``(n,)`` int64, or None for an unconditional model."""
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError("this SAGAN is unconditional (num_classes=0): pass labels=None")
            return None
        if labels is None:
            return torch.arange(n, device=device) % self.num_classes
        if isinstance(labels, int):
            labels = [labels] * n
        labels = torch.as_tensor(labels, device=device)
        if labels.dim() == 1 and labels.shape[0] != n:
            raise ValueError(f"got {labels.shape[0]} labels for n={n} samples")
        return labels.long() if not labels.dtype.is_floating_point else labels

    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels=None,
        truncation: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
        batch_size: int = 256,
        use_ema: bool = True,
    ) -> Tensor:
        """``n`` images ``(n, 3, H, W)`` in [-1, 1], from the EMA generator when present, in eval mode.

        Args:
            labels: see :meth:`make_labels` (ignored structure for unconditional models: must be None).
            truncation: BigGAN's truncation trick: ``z`` entries beyond ``+-truncation`` are redrawn.
            generator: a ``torch.Generator`` for reproducible noise (on the model's device).
            use_ema: False samples from the trained generator even when an EMA copy exists.
        """
        g = self.sampler if use_ema else self.generator
        device = next(g.parameters()).device
        y = self.make_labels(n, labels, device)
        z = truncated_normal((n, self.z_dim), truncation, generator, device=device)
        was_training = g.training
        g.eval()
        try:
            out = [
                g(z[i : i + batch_size], None if y is None else y[i : i + batch_size]) for i in range(0, n, batch_size)
            ]
        finally:
            g.train(was_training)
        return torch.cat(out).float() if out else z.new_zeros(0, 3, self.img_size, self.img_size)


def _build(
    img_size: int,
    defaults: dict,
    num_classes: int = 0,
    ch: int = 64,
    g_ch: Optional[int] = None,
    d_ch: Optional[int] = None,
    **kwargs,
) -> SAGAN:
    """``ch`` sets both widths; ``g_ch`` / ``d_ch`` override one side; other kwargs (overriding ``defaults``) go to
    :class:`SAGAN`."""
    return SAGAN(img_size=img_size, num_classes=num_classes, g_ch=g_ch or ch, d_ch=d_ch or ch, **{**defaults, **kwargs})


@register_model
def sagan_32(num_classes: int = 0, ch: int = 64, **kwargs) -> SAGAN:
    """CIFAR-size SA-GAN (BigGAN's CIFAR layout: 256-wide G and D at ``ch=64``; attention at 16 x 16 in G, 8 x 8 in D)."""
    defaults = dict(
        g_mults=(4, 4, 4, 4), d_mults=(4, 4, 4, 4), d_downsample=(True, True, False, False), g_attn_res=16, d_attn_res=8
    )
    return _build(32, defaults, num_classes, ch, **kwargs)


@register_model
def sagan_64(num_classes: int = 0, ch: int = 64, **kwargs) -> SAGAN:
    """64 x 64 SA-GAN: G widths ``16,16,8,4,2 x ch``, D ``1,2,4,8,16 x ch``, attention at 32 x 32 in both."""
    defaults = dict(g_mults=(16, 16, 8, 4, 2), d_mults=(1, 2, 4, 8, 16), g_attn_res=32, d_attn_res=32)
    return _build(64, defaults, num_classes, ch, **kwargs)


@register_model
def sagan_128(num_classes: int = 1000, ch: int = 64, **kwargs) -> SAGAN:
    """The paper's ImageNet 128 x 128 SA-GAN (``ch=64``): G ``16,16,8,4,2,1 x ch``, D ``1,2,4,8,16,16 x ch``
    (the last D block keeps 4 x 4), attention at 32 x 32 in G and D."""
    defaults = dict(
        g_mults=(16, 16, 8, 4, 2, 1),
        d_mults=(1, 2, 4, 8, 16, 16),
        d_downsample=(True,) * 5 + (False,),
        g_attn_res=32,
        d_attn_res=32,
    )
    return _build(128, defaults, num_classes, ch, **kwargs)
