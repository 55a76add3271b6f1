"""SA-GAN's two networks (Zhang et al. 2019): the residual generator and the projection discriminator, with
self-attention on the core; :class:`~vision_attn.models.SAGAN` (:mod:`.sagan`) holds the pair.

Generator: ``z (B, z_dim)`` -> linear -> ``4 x 4`` map -> residual up-sampling blocks (BatchNorm, class-conditional
when ``num_classes > 0``) -> :class:`~vision_attn.layers.NonLocalBlock2d` at ``g_attn_res`` -> BN-ReLU-conv-tanh.
Discriminator: residual down-sampling blocks, :class:`~vision_attn.layers.NonLocalBlock2d` at ``d_attn_res``, ReLU,
global sum pooling, a linear output plus the projection term ``<embed(y), h>`` (Miyato & Koyama 2018).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.pixel_attention import NonLocalBlock2d
from ..layers.spectral_norm import spectral_norm
from .weights.sagan import unwrap_sn_embedding

__all__ = [
    "ConditionalBatchNorm2d",
    "Discriminator",
    "DiscriminatorBlock",
    "Generator",
    "GeneratorBlock",
    "truncated_normal",
]


def _sn(module: nn.Module, eps: float = 1e-6) -> nn.Module:
    """Orthogonal init, then spectral norm on ``module.weight`` (BigGAN's order)."""
    nn.init.orthogonal_(module.get_parameter("weight"))
    return spectral_norm(module, eps=eps)


def _sn_attention(channels: int, kv_pool: int = 2, scale: Optional[float] = 1.0) -> NonLocalBlock2d:
    """SAGAN's attention: C/8 query / key, C/2 value channels, one head, spectral norm on the four 1x1 convs."""
    block = NonLocalBlock2d(
        channels, num_heads=1, reduction=8, kv_pool=kv_pool, value_channels=channels // 2, scale=scale
    )
    for name in ("query", "key", "value", "out_proj"):  # a fixed list of submodule names, read and set by name
        setattr(block, name, _sn(getattr(block, name)))
    return block


def truncated_normal(
    shape: Sequence[int], truncation: Optional[float] = None, generator: Optional[torch.Generator] = None, device=None
) -> Tensor:
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
        raise ValueError(
            f"{owner} is class-conditional (num_classes={num_classes}); pass labels (B,) in [0, {num_classes - 1}]"
        )
    if labels.dim() != 1 or labels.shape[0] != batch or labels.dtype.is_floating_point:
        raise ValueError(
            f"{owner}: labels must be an integer tensor of shape ({batch},); got {labels.dtype} {tuple(labels.shape)}"
        )
    expected = f"{owner}: labels must be in [0, {num_classes - 1}] (num_classes={num_classes})"
    if torch.compiler.is_compiling():
        # traceable (torch.compile fullgraph, torch.export): reading the values would break the graph
        # private but stable: the check runs on the device, without a host sync (no public equivalent)
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

    def __init__(
        self,
        img_size: int = 32,
        ch: int = 64,
        mults: Sequence[int] = (4, 4, 4, 4),
        z_dim: int = 128,
        num_classes: int = 0,
        embed_dim: int = 128,
        hierarchical_z: bool = False,
        attn_res: Optional[int] = 16,
        attn_kv_pool: int = 2,
        attn_scale: Optional[float] = 1.0,
    ) -> None:
        super().__init__()
        n_blocks = len(mults) - 1
        if n_blocks < 1 or 4 * 2**n_blocks != img_size:
            raise ValueError(
                f"Generator: img_size={img_size} needs len(mults) = log2(img_size/4) + 1; got mults={list(mults)}"
            )
        resolutions = [4 * 2 ** (i + 1) for i in range(n_blocks)]
        if attn_res is not None and attn_res not in resolutions:
            raise ValueError(
                f"Generator: attn_res must be one of {resolutions} (block outputs) or None; got {attn_res}"
            )
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
            if i == self.attn_index and self.attention is not None:  # attn_index is -1 without attention
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

    def __init__(
        self,
        img_size: int = 32,
        ch: int = 64,
        mults: Sequence[int] = (4, 4, 4, 4),
        downsample: Optional[Sequence[bool]] = None,
        num_classes: int = 0,
        attn_res: Optional[int] = 16,
        attn_kv_pool: int = 2,
        attn_scale: Optional[float] = 1.0,
    ) -> None:
        super().__init__()
        downsample = [True] * (len(mults) - 1) + [False] if downsample is None else list(downsample)
        if len(downsample) != len(mults):
            raise ValueError(
                f"Discriminator: downsample has {len(downsample)} entries; expected one per block ({len(mults)})"
            )
        if img_size % 2 ** sum(downsample):
            raise ValueError(
                f"Discriminator: img_size={img_size} is not divisible by 2**{sum(downsample)} (the down-sampling blocks)"
            )
        resolutions, r = [], img_size
        for d in downsample:
            r = r // 2 if d else r
            resolutions.append(r)
        if attn_res is not None and attn_res not in resolutions:
            raise ValueError(
                f"Discriminator: attn_res must be one of {sorted(set(resolutions))} (block outputs) or None; got {attn_res}"
            )
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
            raise ValueError(
                f"Discriminator expects images of shape (B, {', '.join(map(str, expected))}); got {tuple(images.shape)}"
            )
        _check_labels(labels, images.shape[0], self.num_classes, "Discriminator")
        h = images
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attn_index and self.attention is not None:  # attn_index is -1 without attention
                h = self.attention(h)
        h = F.relu(h).sum(dim=(2, 3))  # global sum pooling (B, C)
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(1)
        return out
