"""Transformer layers built on the shared attention core."""

from __future__ import annotations

from typing import Callable, Optional, Type, cast

from timm.layers import DropPath, LayerScale, Mlp
from torch import Tensor, nn

from ..attention import MultiHeadAttention

__all__ = ["TransformerEncoderLayer"]


class TransformerEncoderLayer(nn.Module):
    """Pre-norm encoder layer: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``.

    Names follow timm's ViT ``Block`` (``norm1``, ``attn``, ``ls1``, ``norm2``, ``mlp``, ``ls2``), so
    ViT weights map one-to-one.

    Args:
        dim: token width D; num_heads: H; mlp_ratio: hidden width of the MLP / D.
        proj_drop: dropout after attention and MLP projections; attn_drop: on attention probabilities.
        drop_path: stochastic-depth probability of each residual branch.
        init_values: layer-scale initial value (None = no layer scale).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: Optional[float] = None,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        # timm's Mlp types act_layer as a class but only calls it, so any factory of a module will do.
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=cast(Type[nn.Module], act_layer), drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(
        self, x: Tensor, attn_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None
    ) -> Tensor:
        """``x (B, N, D)`` -> ``(B, N, D)``; masks as in :class:`MultiHeadAttention`."""
        y = self.attn(self.norm1(x), attn_mask=attn_mask, key_padding_mask=key_padding_mask)
        if isinstance(y, tuple):  # never (no need_weights): narrows the core's Union return type for TorchScript
            y = y[0]
        x = x + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x
