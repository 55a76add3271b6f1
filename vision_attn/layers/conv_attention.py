"""A convolution is a self-attention layer: turn a ``k x k`` ``nn.Conv2d`` into multi-head self-attention.

Cordonnier, Loukas & Jaggi (ICLR 2020), "On the relationship between self-attention and convolutional layers":
a multi-head self-attention layer with ``k*k`` heads and relative-position scores can express any ``k x k``
convolution. Head ``h`` owns one offset ``Delta_h`` of the window; the score from the query at pixel ``p`` to the
key at ``p'`` is the paper's quadratic encoding ``-alpha_h * ||(p' - p) - Delta_h||^2``, so with a large
``alpha_h`` the head's softmax puts all its weight on the pixel ``p + Delta_h``. Its value / output projections
multiply that pixel by the conv's weight slice ``W[:, :, Delta_h]``, and the heads' outputs add up to the
convolution.

Here the map is zero-padded by ``k // 2`` and every pixel of the padded map is a key, so an offset that leaves the
image reads a zero, as the convolution's zero padding does. The scores go through the shared core's fused
:func:`~vision_attn.attention.scaled_dot_product_attention` (no second softmax(QK^T)V): queries carry
``(2 alpha (p + Delta), -alpha)``, keys ``(p', ||p'||^2)``, and their dot product is the quadratic score up to a
per-query constant, which the softmax ignores.
"""

from __future__ import annotations

import copy
import logging
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import attention_with_weights

__all__ = ["ConvAttention2d", "attention_from_conv", "convert_convs_to_attention", "conv_attention_unsupported"]

logger = logging.getLogger(__name__)


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def conv_attention_unsupported(conv: nn.Module) -> Optional[str]:
    """Why ``conv`` cannot become a :class:`ConvAttention2d` (one phrase naming the setting), or None if it can."""
    if not isinstance(conv, nn.Conv2d):
        return f"is a {type(conv).__name__}, not an nn.Conv2d"
    kh, kw = _pair(conv.kernel_size)
    if kh != kw or kh % 2 == 0:
        return f"has kernel_size={(kh, kw)}; only square odd kernels (1, 3, 5, ...) are supported"
    if _pair(conv.stride) != (1, 1):
        return f"has stride={_pair(conv.stride)}; only stride 1 is supported"
    if _pair(conv.dilation) != (1, 1):
        return f"has dilation={_pair(conv.dilation)}; only dilation 1 is supported"
    if conv.groups != 1:
        return f"has groups={conv.groups}; only groups=1 is supported"
    padding = conv.padding
    if isinstance(padding, str):
        padding = (kh // 2, kh // 2) if padding == "same" else (0, 0)
    if _pair(padding) != (kh // 2, kh // 2):
        return f"has padding={_pair(padding)}; only padding=kernel_size//2={kh // 2} (same size output) is supported"
    if conv.padding_mode != "zeros":
        return f"has padding_mode={conv.padding_mode!r}; only 'zeros' is supported"
    return None


class ConvAttention2d(nn.Module):
    """Multi-head self-attention with ``k*k`` positional heads, initialised to equal a ``k x k`` convolution.

    Head ``h`` has a learned offset ``offsets[h] = Delta_h`` (``(dy, dx)``, in pixels) and a learned sharpness
    ``alpha[h]``; its attention from pixel ``p`` to pixel ``p'`` of the zero-padded map is
    ``softmax_p'(-alpha_h ||p' - p - Delta_h||^2)``. Values are ``value(x)`` (a 1x1 projection to ``head_dim`` per
    head, no bias, so padded pixels stay zero); the heads are concatenated and ``out_proj`` maps them to
    ``out_channels``. :func:`attention_from_conv` sets these from a convolution's weights.

    All parameters are trainable: ``offsets`` can move a head outside the ``k x k`` window and a smaller ``alpha``
    spreads its attention. The position gradients are of order ``exp(-alpha)`` while the rows are one-hot.

    Args:
        in_channels, out_channels: C_in and C_out.
        kernel_size: k, odd; ``k*k`` heads, offsets initialised to the window's, row-major.
        head_dim: value channels per head.
        bias: a bias on the output projection.
        alpha: initial sharpness; the nearest other pixel gets ``exp(-alpha)`` of the weight.

    Capture: :func:`~vision_attn.attention.capture_attention` records ``(B, k*k, H*W, (H+2r)*(W+2r))``,
    ``r = k // 2``: for each head and query pixel (row-major) its weights over the zero-padded map (row-major).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        head_dim: Optional[int] = None,
        bias: bool = True,
        alpha: float = 20.0,
    ) -> None:
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ConvAttention2d: kernel_size must be a positive odd int; got {kernel_size!r}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.num_heads = kernel_size * kernel_size
        self.head_dim = min(in_channels, out_channels) if head_dim is None else head_dim
        r = kernel_size // 2
        window = torch.arange(-r, r + 1, dtype=torch.float32)
        self.offsets = nn.Parameter(torch.stack(torch.meshgrid(window, window, indexing="ij"), -1).reshape(-1, 2))
        self.alpha = nn.Parameter(torch.full((self.num_heads,), float(alpha)))
        self.value = nn.Conv2d(in_channels, self.num_heads * self.head_dim, 1, bias=False)
        self.out_proj = nn.Linear(self.num_heads * self.head_dim, out_channels, bias=bias)
        # Set by capture_attention(): called with the weights (B, k*k, H*W, Hp*Wp) of each forward.
        self._capture: Optional[Callable[[Tensor], None]] = None

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"num_heads={self.num_heads}, head_dim={self.head_dim}"
        )

    def _positions(self, height: int, width: int, dtype: torch.dtype) -> tuple:
        """Query features ``(1, heads, H*W, 3)`` and key features ``(1, 1, Hp*Wp, 3)`` whose dot product is
        ``-alpha ||p' - p - Delta||^2`` plus a per-query constant; coordinates centred to keep the terms small."""
        r = self.kernel_size // 2
        hp, wp = height + 2 * r, width + 2 * r
        dev = self.offsets.device
        ys = torch.arange(hp, device=dev, dtype=torch.float32) - (hp - 1) / 2
        xs = torch.arange(wp, device=dev, dtype=torch.float32) - (wp - 1) / 2
        keys = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)  # (Hp*Wp, 2)
        queries = torch.stack(torch.meshgrid(ys[r : r + height], xs[r : r + width], indexing="ij"), -1).reshape(-1, 2)
        alpha = self.alpha.float()[:, None, None]
        target = queries[None] + self.offsets.float()[:, None, :]  # (heads, H*W, 2): where each head looks
        q = torch.cat([2 * alpha * target, (-alpha).expand(-1, target.shape[1], 1)], -1)
        k = torch.cat([keys, keys.square().sum(-1, keepdim=True)], -1)
        return q[None].to(dtype), k[None, None].to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, C_in, H, W)`` -> ``(B, C_out, H, W)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ConvAttention2d expects (B, {self.in_channels}, H, W); got {tuple(x.shape)}")
        B, _, H, W = x.shape
        r, heads, d = self.kernel_size // 2, self.num_heads, self.head_dim
        v = F.pad(self.value(x), (r, r, r, r))  # zero padding: out-of-image offsets read zeros
        v = v.reshape(B, heads, d, -1).transpose(-1, -2)  # (B, heads, Hp*Wp, d)
        q, k = self._positions(H, W, v.dtype)
        q, k = q.expand(B, -1, -1, -1), k.expand(B, heads, -1, -1)
        capture = self._capture
        out, weights = attention_with_weights(q, k, v, need_weights=capture is not None, scale=1.0)
        out = self.out_proj(out.transpose(1, 2).reshape(B, H * W, heads * d))  # (B, H*W, C_out)
        if capture is not None and weights is not None:  # weights are computed whenever capture is set
            capture(weights)
        return out.transpose(1, 2).reshape(B, self.out_channels, H, W)


def attention_from_conv(conv: nn.Conv2d, alpha: float = 20.0, name: Optional[str] = None) -> ConvAttention2d:
    """A :class:`ConvAttention2d` whose output equals ``conv``'s (same device and dtype, trainable).

    ``conv``: stride 1, dilation 1, groups 1, odd square kernel ``k``, zero padding ``k // 2``, with or without bias.
    Head ``h`` (offset ``Delta_h``) gets the slice ``W[:, :, Delta_h]`` of the weight ``(C_out, C_in, k, k)``, split
    as the paper does: with ``C_in <= C_out`` the values are the input (identity) and ``out_proj`` holds the
    slices; otherwise the values hold the slices and ``out_proj`` adds the heads. ``name`` labels errors.
    """
    why = conv_attention_unsupported(conv)
    if why is not None:
        label = name or "conv"
        raise ValueError(f"attention_from_conv: {label} {conv!r} {why}")
    c_out, c_in, k, _ = conv.weight.shape
    layer = ConvAttention2d(c_in, c_out, k, bias=conv.bias is not None, alpha=alpha)
    layer = layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
    d, heads = layer.head_dim, layer.num_heads
    with torch.no_grad():
        slices = conv.weight.detach().permute(2, 3, 0, 1).reshape(heads, c_out, c_in)  # row-major offsets
        eye_in = torch.eye(c_in, dtype=slices.dtype, device=slices.device)
        eye_out = torch.eye(c_out, dtype=slices.dtype, device=slices.device)
        if c_in <= c_out:
            layer.value.weight.copy_(eye_in.repeat(heads, 1)[..., None, None])
            layer.out_proj.weight.copy_(slices.permute(1, 0, 2).reshape(c_out, heads * d))
        else:
            layer.value.weight.copy_(slices.reshape(heads * d, c_in)[..., None, None])
            layer.out_proj.weight.copy_(eye_out.repeat(1, heads))
        if conv.bias is not None:
            layer.out_proj.bias.copy_(conv.bias.detach())
    return layer


def convert_convs_to_attention(
    model: nn.Module, kernel_sizes: Optional[Sequence[int]] = (3,), alpha: float = 20.0, inplace: bool = False
) -> nn.Module:
    """Replace every supported ``nn.Conv2d`` of ``model`` (with a kernel in ``kernel_sizes``; None = any odd k) by
    :func:`attention_from_conv`; the outputs stay the same.

    Convolutions it cannot express (stride, dilation, groups, other padding) stay convolutions. Works on a deep
    copy unless ``inplace``. Returns the model; its attribute ``conv_attention_report`` maps each ``Conv2d``'s name
    to ``"converted"`` or the reason it was kept, and a summary goes to this module's logger (INFO).
    """
    model = model if inplace else copy.deepcopy(model)
    report: Dict[str, str] = {}
    for name, conv in list(model.named_modules()):
        if not isinstance(conv, nn.Conv2d):
            continue
        k = _pair(conv.kernel_size)[0]
        why = conv_attention_unsupported(conv)
        if why is None and kernel_sizes is not None and k not in kernel_sizes:
            why = f"has kernel_size={k}, not in kernel_sizes={tuple(kernel_sizes)}"
        if why is not None:
            report[name] = why
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if not child:  # the model itself is a conv
            raise ValueError("convert_convs_to_attention: the model is a single Conv2d; use attention_from_conv(model)")
        setattr(parent, child, attention_from_conv(conv, alpha, name))
        report[name] = "converted"
    converted = [n for n, r in report.items() if r == "converted"]
    kept = [f"{n} ({r})" for n, r in report.items() if r != "converted"]
    logger.info(
        "converted %d convs to attention: %s; kept %d: %s",
        len(converted),
        ", ".join(converted) or "-",
        len(kept),
        "; ".join(kept) or "-",
    )
    # A plain (non-tensor) attribute on a model of any class; torch's stub types Module attributes as Tensor | Module.
    model.conv_attention_report = report  # type: ignore[assignment]
    return model
