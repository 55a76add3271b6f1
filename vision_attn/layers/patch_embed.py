"""Image to patch tokens: a strided convolution, as in ViT."""

from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.fx
from torch import Tensor, nn

from ..attention.core import shape_str

__all__ = ["PatchEmbed", "check_image_input"]


def _pair(x: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def check_image_input(x: Tensor, in_chans: int, owner: str) -> None:
    """Raise a ValueError naming ``owner`` unless ``x`` is ``(B, in_chans, H, W)``.

    It compiles in TorchScript, and torch.fx records it as one call (a module that calls it must
    ``torch.fx.wrap("check_image_input")``): the check then runs with the traced graph.
    """
    if not torch.jit.is_scripting() and not isinstance(x, Tensor):
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{owner} expects images of shape (B, {in_chans}, H, W); got {shape}")
    if x.dim() != 4:
        raise ValueError(f"{owner} expects images of shape (B, {in_chans}, H, W); got {shape_str(list(x.shape))}")
    if x.shape[1] != in_chans:
        raise ValueError(
            f"{owner} expects {in_chans} input channels (in_chans={in_chans}); got {x.shape[1]} "
            f"in input of shape {shape_str(list(x.shape))}"
        )


def check_image_size(
    height: int, width: int, img_size: Tuple[int, int], patch_size: Tuple[int, int], strict: bool
) -> None:
    """Raise a ValueError unless a ``height x width`` image is allowed: ``img_size`` itself when ``strict``, and
    divisible by ``patch_size`` (TorchScript- and fx-safe, as :func:`check_image_input`)."""
    if strict and (height != img_size[0] or width != img_size[1]):
        raise ValueError(
            f"expected images of {img_size[0]}x{img_size[1]} pixels (img_size); got {height}x{width}. "
            f"Create the model with img_size=({height}, {width}) (learned positions are resampled on load) "
            "or dynamic_img_size=True"
        )
    if height % patch_size[0] != 0 or width % patch_size[1] != 0:
        raise ValueError(
            f"image size {height}x{width} is not divisible by patch_size ({patch_size[0]}, {patch_size[1]})"
        )


# fx records the checks as calls run with the graph (it cannot branch on traced shapes while tracing).
torch.fx.wrap("check_image_input")
torch.fx.wrap("check_image_size")


class PatchEmbed(nn.Module):
    """Split ``(B, C, H, W)`` images into ``patch_size`` patches and embed each one.

    Args:
        img_size: the training image size; with ``strict_img_size`` other sizes are refused.
        patch_size: side of a square patch (or ``(ph, pw)``).
        in_chans: input channels C.
        embed_dim: token width D.
    """

    def __init__(
        self, img_size=224, patch_size=16, in_chans: int = 3, embed_dim: int = 768, strict_img_size: bool = True
    ):
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        for s, p in zip(self.img_size, self.patch_size):
            if s % p != 0:
                raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        self.strict_img_size = strict_img_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def feature_grid(self, height: int, width: int) -> Tuple[int, int]:
        """The token grid ``(h, w)`` an image of ``height x width`` gives; raises if the size is not allowed."""
        check_image_size(height, width, self.img_size, self.patch_size, self.strict_img_size)
        return height // self.patch_size[0], width // self.patch_size[1]

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, h*w, D)`` tokens, row-major over the patch grid."""
        check_image_input(x, self.in_chans, "PatchEmbed")
        check_image_size(x.shape[2], x.shape[3], self.img_size, self.patch_size, self.strict_img_size)
        return self.proj(x).flatten(2).transpose(1, 2)
