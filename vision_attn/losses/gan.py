"""GAN losses (hinge, non-saturating) and DiffAugment (Zhao et al. 2020) for data-efficient GAN training.

Losses take discriminator logits ``(B,)``. DiffAugment takes images ``(B, C, H, W)`` and is differentiable with
respect to them, so the generator is trained through it; apply the same policy to real and fake images.
:class:`GanCriterionConfig` is ``GenerationTask``'s choice among them (``criterion:`` in its configs).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Literal, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "GanCriterionConfig",
    "d_hinge_loss",
    "g_hinge_loss",
    "d_nonsaturating_loss",
    "g_nonsaturating_loss",
    "gan_losses",
    "DiffAugment",
    "diff_augment",
]


def d_hinge_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))`` (SAGAN / BigGAN); logits ``(B,)``; a scalar."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_hinge_loss(fake_logits: Tensor) -> Tensor:
    """``-mean(D(G(z)))``; logits ``(B,)``; a scalar."""
    return -fake_logits.mean()


def d_nonsaturating_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """``softplus(-D(x)) + softplus(D(G(z)))`` averaged: binary cross-entropy with real = 1, fake = 0."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: Tensor) -> Tensor:
    """``mean(softplus(-D(G(z))))`` (Goodfellow et al.'s non-saturating generator loss)."""
    return F.softplus(-fake_logits).mean()


_LOSSES = {"hinge": (d_hinge_loss, g_hinge_loss), "nonsaturating": (d_nonsaturating_loss, g_nonsaturating_loss)}


def gan_losses(kind: str):
    """``(d_loss(real_logits, fake_logits), g_loss(fake_logits))`` for ``kind`` = ``"hinge"`` or ``"nonsaturating"``."""
    if kind not in _LOSSES:
        raise ValueError(f"GAN loss must be one of {sorted(_LOSSES)}; got {kind!r}")
    return _LOSSES[kind]


# ---- DiffAugment ------------------------------------------------------------------------------------------------
def _color(x: Tensor, g: Optional[torch.Generator]) -> Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5), per image (DiffAugment's 'color')."""
    B = x.shape[0]
    r = lambda: torch.rand(B, 1, 1, 1, generator=g, device=x.device, dtype=x.dtype)  # noqa: E731
    x = x + (r() - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (r() * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (r() + 0.5) + mean


def _translation(x: Tensor, g: Optional[torch.Generator], ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ``ratio`` of its size, filling with zeros ('translation')."""
    B, _, H, W = x.shape
    sy, sx = int(H * ratio + 0.5), int(W * ratio + 0.5)
    ty = torch.randint(-sy, sy + 1, (B, 1, 1), generator=g, device=x.device)
    tx = torch.randint(-sx, sx + 1, (B, 1, 1), generator=g, device=x.device)
    gy, gx = torch.meshgrid(torch.arange(H, device=x.device), torch.arange(W, device=x.device), indexing="ij")
    ys = (gy[None] + ty + 1).clamp(0, H + 1)
    xs = (gx[None] + tx + 1).clamp(0, W + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # the zero border is where shifted-out pixels read from
    idx = (ys * (W + 2) + xs).view(B, 1, H * W).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, idx).view_as(x)


def _cutout(x: Tensor, g: Optional[torch.Generator], ratio: float = 0.5) -> Tensor:
    """Zero a random square of ``ratio`` x the image size per image ('cutout')."""
    B, _, H, W = x.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    oy = torch.randint(0, H + (1 - ch % 2), (B, 1, 1), generator=g, device=x.device)
    ox = torch.randint(0, W + (1 - cw % 2), (B, 1, 1), generator=g, device=x.device)
    gy = torch.arange(H, device=x.device)[None, :, None]
    gx = torch.arange(W, device=x.device)[None, None, :]
    dy, dx = gy - oy + ch // 2, gx - ox + cw // 2  # position inside the square, if in [0, ch) x [0, cw)
    inside = (dy >= 0) & (dy < ch) & (dx >= 0) & (dx < cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}


class DiffAugment:
    """Differentiable augmentation applied to every image the discriminator sees (real and fake alike).

    Args:
        policy: comma-separated ops among ``color``, ``translation``, ``cutout`` (DiffAugment's
            ``"color,translation,cutout"``), a sequence of them, or ``""`` / None for none.

    ``__call__(x (B, C, H, W), generator=None) -> (B, C, H, W)``; gradients flow to ``x``.
    """

    def __init__(self, policy: Union[str, Sequence[str], None] = "color,translation,cutout") -> None:
        if policy is None:
            ops: Tuple[str, ...] = ()
        elif isinstance(policy, str):
            ops = tuple(p.strip() for p in policy.split(",") if p.strip())
        else:
            ops = tuple(policy)
        unknown = [p for p in ops if p not in _OPS]
        if unknown:
            raise ValueError(
                f"DiffAugment policy: unknown op(s) {unknown}; choose from {sorted(_OPS)} (comma-separated)"
            )
        self.ops = ops

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __repr__(self) -> str:
        return f"DiffAugment({','.join(self.ops)!r})"

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"DiffAugment expects images (B, C, H, W); got {tuple(x.shape)}")
        for op in self.ops:
            x = _OPS[op](x, generator)
        return x.contiguous()


def diff_augment(
    x: Tensor, policy: str = "color,translation,cutout", generator: Optional[torch.Generator] = None
) -> Tensor:
    """Functional form of :class:`DiffAugment`: ``x (B, C, H, W)`` -> augmented ``(B, C, H, W)``."""
    return DiffAugment(policy)(x, generator)


# ---- the task's settings ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GanCriterionConfig:
    """The adversarial loss and what the discriminator sees (``model.init_args.criterion`` of ``GenerationTask``
    configs); the defaults are SA-GAN's.

    Args:
        loss: ``"hinge"`` (SA-GAN, BigGAN) or ``"nonsaturating"`` (Goodfellow et al.).
        diffaug: DiffAugment policy on every image D sees (``"color,translation,cutout"``) for small data; None = off.
        real_flip: random horizontal flips of real images (the datamodule must have ``augment=False``: its
            zero-padded crops would teach G black borders; ``GenerationTask`` says so if not).
    """

    loss: Literal["hinge", "nonsaturating"] = "hinge"
    diffaug: Optional[str] = None
    real_flip: bool = True

    def __post_init__(self) -> None:
        where = "GanCriterionConfig (model.init_args.criterion)"
        if self.loss not in _LOSSES:
            raise ValueError(f"{where}: loss must be one of {sorted(_LOSSES)}; got {self.loss!r}")
        try:
            DiffAugment(self.diffaug)
        except ValueError as err:
            raise ValueError(f"{where}: diffaug: {err}") from None
        if not isinstance(self.real_flip, bool):
            raise ValueError(f"{where}: real_flip must be true or false; got {self.real_flip!r}")

    def build(self) -> Tuple[Callable[[Tensor, Tensor], Tensor], Callable[[Tensor], Tensor], DiffAugment]:
        """``(d_loss(real_logits, fake_logits), g_loss(fake_logits), DiffAugment)`` of these settings."""
        d_loss, g_loss = gan_losses(self.loss)
        return d_loss, g_loss, DiffAugment(self.diffaug)

    def to_hparams(self) -> Dict[str, Any]:
        """Plain values for checkpoints (read with ``weights_only=True``) and hparams.yaml."""
        return dataclasses.asdict(self)
