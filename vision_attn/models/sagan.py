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
import torch.nn.functional as F
from torch import Tensor, nn
from ..layers.spectral_norm import spectral_norm

from ..layers.pixel_attention import NonLocalBlock2d
from .hub import PretrainedMixin
from .registry import register_model
from .weights.sagan import unwrap_sn_embedding

__all__ = ["Generator", "Discriminator", "SAGAN", "sagan_32", "sagan_64", "sagan_128", "truncated_normal"]


def _sn(module: nn.Module, eps: float = 1e-6) -> nn.Module:
    """Orthogonal init, then spectral norm on ``module.weight`` (BigGAN's order)."""
    nn.init.orthogonal_(module.weight)
    return spectral_norm(module, eps=eps)


def _sn_attention(channels: int, kv_pool: int = 2, scale: Optional[float] = 1.0) -> NonLocalBlock2d:
    """SAGAN's attention: C/8 query / key, C/2 value channels, one head, spectral norm on the four 1x1 convs."""
    block = NonLocalBlock2d(channels, num_heads=1, reduction=8, kv_pool=kv_pool, value_channels=channels // 2, scale=scale)
    for name in ("query", "key", "value", "out_proj"):
        setattr(block, name, _sn(getattr(block, name)))
    return block


def truncated_normal(shape: Sequence[int], truncation: Optional[float] = None, generator: Optional[torch.Generator] = None,
                     device=None) -> Tensor:
    """Standard normal samples; with ``truncation`` t, values with ``|z| > t`` are redrawn until inside (BigGAN)."""
    z = torch.randn(*shape, generator=generator, device=device)
    if truncation is None:
        return z
    if truncation <= 0:
        raise ValueError(f"truncation must be > 0 (or None for no truncation); got {truncation}")
    outside = z.abs() > truncation
    while outside.any():
        z[outside] = torch.randn(int(outside.sum()), generator=generator, device=device)
        outside = z.abs() > truncation
    return z


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose gain and bias are linear in a conditioning vector (BigGAN); plain BN when ``cond_dim == 0``.

    ``forward(x (B, C, H, W), cond (B, cond_dim) or None) -> (B, C, H, W)``; gain is ``1 + linear(cond)``.
    """

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.bn = nn.BatchNorm2d(channels, affine=cond_dim == 0)
        if cond_dim > 0:
            self.gain = _sn(nn.Linear(cond_dim, channels, bias=False))
            self.bias = _sn(nn.Linear(cond_dim, channels, bias=False))

    def forward(self, x: Tensor, cond: Optional[Tensor]) -> Tensor:
        x = self.bn(x)
        if self.cond_dim == 0:
            return x
        return x * (1 + self.gain(cond))[:, :, None, None] + self.bias(cond)[:, :, None, None]


class GeneratorBlock(nn.Module):
    """BN-ReLU-up-conv3-BN-ReLU-conv3 with a 1x1 up-sampled shortcut; ``(B, in, H, W) -> (B, out, 2H, 2W)``."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int) -> None:
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(in_ch, cond_dim)
        self.conv1 = _sn(nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.bn2 = ConditionalBatchNorm2d(out_ch, cond_dim)
        self.conv2 = _sn(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.shortcut = _sn(nn.Conv2d(in_ch, out_ch, 1))

    def forward(self, x: Tensor, cond: Optional[Tensor]) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, cond)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), cond)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DiscriminatorBlock(nn.Module):
    """(ReLU)-conv3-ReLU-conv3-(avgpool) with a 1x1 shortcut; the first block has no leading ReLU (BigGAN's optimised block)."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool, first: bool) -> None:
        super().__init__()
        self.first, self.downsample = first, downsample
        self.conv1 = _sn(nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.conv2 = _sn(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.shortcut = _sn(nn.Conv2d(in_ch, out_ch, 1)) if (in_ch != out_ch or downsample) else None

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:  # pool, then project: the input has only 3 channels
            s = F.avg_pool2d(s, 2) if self.downsample else s
            s = self.shortcut(s) if self.shortcut is not None else s
        else:
            s = self.shortcut(s) if self.shortcut is not None else s
            s = F.avg_pool2d(s, 2) if self.downsample else s
        return h + s


def _check_labels(labels: Optional[Tensor], batch: int, num_classes: int, owner: str) -> None:
    if num_classes == 0:
        if labels is not None:
            raise ValueError(f"{owner} is unconditional (num_classes=0) but got labels; pass labels=None")
        return
    if labels is None:
        raise ValueError(f"{owner} is class-conditional (num_classes={num_classes}); pass labels (B,) in [0, {num_classes - 1}]")
    if labels.dim() != 1 or labels.shape[0] != batch or labels.dtype.is_floating_point:
        raise ValueError(f"{owner}: labels must be an integer tensor of shape ({batch},); got {labels.dtype} {tuple(labels.shape)}")
    expected = f"{owner}: labels must be in [0, {num_classes - 1}] (num_classes={num_classes})"
    if torch.compiler.is_compiling():
        # traceable (torch.compile fullgraph, torch.export): reading the values would break the graph
        torch._assert_async(((labels >= 0) & (labels < num_classes)).all(), expected)
    elif labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{expected}; got values in [{int(labels.min())}, {int(labels.max())}]")


class Generator(nn.Module):
    """``forward(z (B, z_dim), labels (B,) int or None) -> images (B, 3, img_size, img_size)`` in [-1, 1].

    Args:
        img_size: output side; ``4 * 2 ** (len(mults) - 1)``.
        ch: base width; block ``i`` has ``mults[i] * ch`` input channels (the 4 x 4 map has ``mults[0] * ch``).
        mults: widths per resolution 4, 8, ..., img_size (length ``log2(img_size / 4) + 1``).
        z_dim: noise size (SAGAN / BigGAN: 128).
        num_classes: 0 = unconditional; otherwise class-conditional BatchNorm from a shared embedding.
        embed_dim: size of that shared class embedding.
        hierarchical_z: BigGAN's split of ``z`` into one chunk per block, fed to its BatchNorm.
        attn_res: resolution of the self-attention (a block output size: 8 .. img_size); None = no attention.
        attn_kv_pool: 2x2 max-pool of keys / values in the attention (SAGAN / BigGAN: 2; 1 = every pixel).
        attn_scale: the attention's score scale (SAGAN / BigGAN: 1.0, raw dot products; None = ``1/sqrt(d)``).

    Checkpoints saved when the class embedding was spectral-normalised load (as ``W / sigma``, what they computed
    in eval mode); pass ``attn_kv_pool=1, attn_scale=None`` to get their attention back too.
    """

    def __init__(self, img_size: int = 32, ch: int = 64, mults: Sequence[int] = (4, 4, 4, 4), z_dim: int = 128,
                 num_classes: int = 0, embed_dim: int = 128, hierarchical_z: bool = False, attn_res: Optional[int] = 16,
                 attn_kv_pool: int = 2, attn_scale: Optional[float] = 1.0) -> None:
        super().__init__()
        n_blocks = len(mults) - 1
        if n_blocks < 1 or 4 * 2 ** n_blocks != img_size:
            raise ValueError(f"Generator: img_size={img_size} needs len(mults) = log2(img_size/4) + 1; got mults={list(mults)}")
        resolutions = [4 * 2 ** (i + 1) for i in range(n_blocks)]
        if attn_res is not None and attn_res not in resolutions:
            raise ValueError(f"Generator: attn_res must be one of {resolutions} (block outputs) or None; got {attn_res}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional); got {num_classes}")
        self.img_size, self.z_dim, self.num_classes = img_size, z_dim, num_classes
        self.hierarchical_z, self.attn_res = hierarchical_z, attn_res
        if hierarchical_z:
            self.z_chunk = z_dim // (n_blocks + 1)
            if self.z_chunk < 1:
                raise ValueError(f"Generator: z_dim={z_dim} is too small to split into {n_blocks + 1} chunks")
            self.z_first = z_dim - n_blocks * self.z_chunk  # the linear layer takes the remainder too
        else:
            self.z_chunk, self.z_first = 0, z_dim
        cond_dim = (embed_dim if num_classes > 0 else 0) + self.z_chunk
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes > 0 else None  # no SN, as BigGAN
        if self.embed is not None:  # orthogonal, as every BigGAN weight
            nn.init.orthogonal_(self.embed.weight)
        self._register_load_state_dict_pre_hook(unwrap_sn_embedding)  # checkpoints from before the plain embedding
        widths = [m * ch for m in mults]
        self.linear = _sn(nn.Linear(self.z_first, 16 * widths[0]))
        self.blocks = nn.ModuleList(GeneratorBlock(widths[i], widths[i + 1], cond_dim) for i in range(n_blocks))
        self.attn_index = resolutions.index(attn_res) if attn_res is not None else -1
        self.attention = _sn_attention(widths[self.attn_index + 1], attn_kv_pool, attn_scale) if attn_res else None
        self.out_bn = nn.BatchNorm2d(widths[-1])
        self.out_conv = _sn(nn.Conv2d(widths[-1], 3, 3, padding=1))

    def forward(self, z: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"Generator expects z of shape (B, {self.z_dim}); got {tuple(z.shape)}")
        _check_labels(labels, z.shape[0], self.num_classes, "Generator")
        if self.hierarchical_z:
            chunks = list(z.split([self.z_first] + [self.z_chunk] * len(self.blocks), dim=1))
        else:
            chunks = [z] + [None] * len(self.blocks)
        y = self.embed(labels) if self.embed is not None else None
        h = self.linear(chunks[0]).view(z.shape[0], -1, 4, 4)
        for i, block in enumerate(self.blocks):
            parts = [t for t in (y, chunks[i + 1]) if t is not None]
            cond = torch.cat(parts, 1) if parts else None
            h = block(h, cond)
            if i == self.attn_index:
                h = self.attention(h)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))


class Discriminator(nn.Module):
    """``forward(images (B, 3, img_size, img_size), labels (B,) int or None) -> logits (B,)``.

    Args:
        img_size: input side (checked).
        ch: base width; block ``i`` outputs ``mults[i] * ch`` channels.
        mults: widths of the residual blocks.
        downsample: per block, whether it halves the resolution (default: all but the last).
        num_classes: 0 = unconditional; otherwise the projection term ``<embed(y), h>`` is added.
        attn_res: resolution (of a block output) where the self-attention goes; None = none.
        attn_kv_pool, attn_scale: see :class:`Generator`.
    """

    def __init__(self, img_size: int = 32, ch: int = 64, mults: Sequence[int] = (4, 4, 4, 4),
                 downsample: Optional[Sequence[bool]] = None, num_classes: int = 0, attn_res: Optional[int] = 16,
                 attn_kv_pool: int = 2, attn_scale: Optional[float] = 1.0) -> None:
        super().__init__()
        downsample = [True] * (len(mults) - 1) + [False] if downsample is None else list(downsample)
        if len(downsample) != len(mults):
            raise ValueError(f"Discriminator: downsample has {len(downsample)} entries; expected one per block ({len(mults)})")
        if img_size % 2 ** sum(downsample):
            raise ValueError(f"Discriminator: img_size={img_size} is not divisible by 2**{sum(downsample)} (the down-sampling blocks)")
        resolutions, r = [], img_size
        for d in downsample:
            r = r // 2 if d else r
            resolutions.append(r)
        if attn_res is not None and attn_res not in resolutions:
            raise ValueError(f"Discriminator: attn_res must be one of {sorted(set(resolutions))} (block outputs) or None; got {attn_res}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional); got {num_classes}")
        self.img_size, self.num_classes = img_size, num_classes
        widths = [3] + [m * ch for m in mults]
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(widths[i], widths[i + 1], downsample[i], first=i == 0) for i in range(len(mults))
        )
        self.attn_index = resolutions.index(attn_res) if attn_res is not None else -1
        self.attention = _sn_attention(widths[self.attn_index + 1], attn_kv_pool, attn_scale) if attn_res else None
        self.linear = _sn(nn.Linear(widths[-1], 1))
        self.embed = _sn(nn.Embedding(num_classes, widths[-1])) if num_classes > 0 else None

    def forward(self, images: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        expected = (3, self.img_size, self.img_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"Discriminator expects images of shape (B, {', '.join(map(str, expected))}); got {tuple(images.shape)}")
        _check_labels(labels, images.shape[0], self.num_classes, "Discriminator")
        h = images
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attn_index:
                h = self.attention(h)
        h = F.relu(h).sum(dim=(2, 3))  # global sum pooling (B, C)
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(1)
        return out


class SAGAN(PretrainedMixin, nn.Module):
    """Generator, discriminator and the generator's EMA copy (``generator_ema``, used by :meth:`sample`).

    Args:
        img_size, num_classes, z_dim, hierarchical_z: shared by G and D (0 classes = unconditional).
        g_ch, g_mults, g_attn_res, d_ch, d_mults, d_downsample, d_attn_res: see :class:`Generator` and
            :class:`Discriminator`.
        attn_kv_pool, attn_scale: both attentions' key / value pooling and score scale (default SAGAN's: 2, 1.0).
        ema: keep ``generator_ema`` (updated by :meth:`update_ema`; the training task does this).
    """

    def __init__(self, img_size: int = 32, num_classes: int = 0, z_dim: int = 128, hierarchical_z: bool = False,
                 g_ch: int = 64, g_mults: Sequence[int] = (4, 4, 4, 4), g_attn_res: Optional[int] = 16,
                 d_ch: int = 64, d_mults: Sequence[int] = (4, 4, 4, 4), d_downsample: Optional[Sequence[bool]] = None,
                 d_attn_res: Optional[int] = 16, embed_dim: int = 128, attn_kv_pool: int = 2,
                 attn_scale: Optional[float] = 1.0, ema: bool = True) -> None:
        super().__init__()
        self.img_size, self.num_classes, self.z_dim = img_size, num_classes, z_dim
        attn = (attn_kv_pool, attn_scale)
        self.generator = Generator(img_size, g_ch, g_mults, z_dim, num_classes, embed_dim, hierarchical_z, g_attn_res, *attn)
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
    def recompute_ema_statistics(self, n_batches: int = 20, batch_size: int = 64, generator: Optional[torch.Generator] = None) -> None:
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
                y = torch.randint(0, self.num_classes, (batch_size,), generator=generator, device=device) if self.num_classes else None
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
    def sample(self, n: int, labels=None, truncation: Optional[float] = None,
               generator: Optional[torch.Generator] = None, batch_size: int = 256, use_ema: bool = True) -> Tensor:
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
            out = [g(z[i:i + batch_size], None if y is None else y[i:i + batch_size]) for i in range(0, n, batch_size)]
        finally:
            g.train(was_training)
        return torch.cat(out).float() if out else z.new_zeros(0, 3, self.img_size, self.img_size)


def _build(img_size: int, defaults: dict, num_classes: int = 0, ch: int = 64, g_ch: Optional[int] = None,
           d_ch: Optional[int] = None, **kwargs) -> SAGAN:
    """``ch`` sets both widths; ``g_ch`` / ``d_ch`` override one side; other kwargs (overriding ``defaults``) go to
    :class:`SAGAN`."""
    return SAGAN(img_size=img_size, num_classes=num_classes, g_ch=g_ch or ch, d_ch=d_ch or ch, **{**defaults, **kwargs})


@register_model
def sagan_32(num_classes: int = 0, ch: int = 64, **kwargs) -> SAGAN:
    """CIFAR-size SA-GAN (BigGAN's CIFAR layout: 256-wide G and D at ``ch=64``; attention at 16 x 16 in G, 8 x 8 in D)."""
    defaults = dict(g_mults=(4, 4, 4, 4), d_mults=(4, 4, 4, 4), d_downsample=(True, True, False, False), g_attn_res=16, d_attn_res=8)
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
    defaults = dict(g_mults=(16, 16, 8, 4, 2, 1), d_mults=(1, 2, 4, 8, 16, 16), d_downsample=(True,) * 5 + (False,),
                    g_attn_res=32, d_attn_res=32)
    return _build(128, defaults, num_classes, ch, **kwargs)
