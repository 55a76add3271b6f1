"""Floor 3: losses: DETR's Hungarian matcher and set criterion, GAN hinge / non-saturating losses, DiffAugment."""

from .matcher import HungarianMatcher
from .set_criterion import SetCriterion, SetCriterionConfig

__all__ = ["HungarianMatcher", "SetCriterion", "SetCriterionConfig"]

# GAN losses (SA-GAN)
from .gan import (  # noqa: E402
    DiffAugment,
    GanCriterionConfig,
    d_hinge_loss,
    d_nonsaturating_loss,
    diff_augment,
    g_hinge_loss,
    g_nonsaturating_loss,
    gan_losses,
)

__all__ += [
    "DiffAugment",
    "GanCriterionConfig",
    "diff_augment",
    "d_hinge_loss",
    "g_hinge_loss",
    "d_nonsaturating_loss",
    "g_nonsaturating_loss",
    "gan_losses",
]
