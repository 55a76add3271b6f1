"""Pixel-level self-attention: every pixel of a ``(B, C, H, W)`` feature map is a token, on the shared core.

Two receptive fields, both computed by :func:`vision_attn.attention.scaled_dot_product_attention` (the fused
kernel, forward and backward; no second softmax(QK^T)V here):

* :class:`NonLocalBlock2d` - global: every pixel attends to every pixel (SAGAN / BigGAN / non-local networks).
* :class:`LocalSelfAttention2d` - local: every pixel attends exactly to its k x k neighbourhood, with learned
  relative row/column embeddings (stand-alone self-attention, Ramachandran et al. 2019).

Both record per-pixel attention maps under :func:`vision_attn.attention.capture_attention`.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.fx
import torch.nn.functional as F
from timm.models import register_notrace_module
from torch import Tensor, nn

try:  # torch has no public name for it; newer torch logs a warning on the first call of is_fx_tracing
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing
except ImportError:  # torch < 2.6: is_fx_tracing, which is True under torch.export too (excluded where it is called)
    from torch.fx._symbolic_trace import is_fx_tracing as is_fx_symbolic_tracing

from ..attention import attention_with_weights
from ..attention.core import shape_str
from .local_kernels import (
    LOCAL_BACKENDS,
    _halo_layout,
    _halo_radius,
    _halo_window_mask,
    _halo_window_weights,
    _shifted,
    flex_local_attention,
    flex_supported,
    halo_local_attention,
    unfold_local_attention,
)

__all__ = ["NonLocalBlock2d", "LocalSelfAttention2d"]


def check_feature_map(x: Tensor, channels: int, owner: str) -> None:
    """Raise a ValueError naming ``owner`` unless ``x`` is ``(B, channels, H, W)`` (TorchScript- and fx-safe)."""
    if not torch.jit.is_scripting() and not isinstance(x, Tensor):
        raise ValueError(
            f"{owner} expects a feature map of shape (B, {channels}, H, W) (channels={channels}); "
            f"got {type(x).__name__}"
        )
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(
            f"{owner} expects a feature map of shape (B, {channels}, H, W) (channels={channels}); "
            f"got {shape_str(list(x.shape))}"
        )


# fx records these as one call each, run with the graph: they branch on shapes, which fx cannot while tracing.
torch.fx.wrap("check_feature_map")
torch.fx.wrap("halo_local_attention")


def _check_heads(owner: str, what: str, width: int, num_heads: int) -> None:
    if num_heads < 1:
        raise ValueError(f"{owner}: num_heads must be >= 1; got num_heads={num_heads}")
    if width % num_heads != 0:
        raise ValueError(f"{owner}: {what}={width} is not divisible by num_heads={num_heads}")


class NonLocalBlock2d(nn.Module):
    """Global self-attention over all ``H*W`` pixels, as a residual block that starts as the identity.

    ``out = x + gamma * out_proj(attention(query(x), pool(key(x)), pool(value(x))))``, with 1x1 convolutions
    for the projections (queries and keys reduced to ``channels // reduction``, values to ``value_channels``)
    and ``gamma`` a learnable scalar initialised to 0 (SAGAN, Zhang et al. 2019; BigGAN's layout).

    Args:
        channels: C, input and output channels; must be divisible by ``num_heads``.
        num_heads: attention heads (SAGAN: 1).
        reduction: queries and keys have ``channels // reduction`` channels (SAGAN / BigGAN: 8).
        kv_pool: ``2`` max-pools keys and values 2x2 (SAGAN / BigGAN), so each pixel attends to ``ceil(H/2)*ceil(W/2)``
            pooled pixels: about 4x less attention cost. ``1`` = every pixel.
        value_channels: width of the values (default ``channels // 2``, as BigGAN).
        scale: score scale: None = ``(query channels per head) ** -0.5``; ``1.0`` = raw ``q . k``, as SAGAN's
            ``non_local.py`` (``kv_pool=2, scale=1.0`` with the defaults is SAGAN's block; its SN is the model's).

    Capture: :func:`~vision_attn.attention.capture_attention` records ``(B, num_heads, H*W, Nk)``, with
    ``Nk = H*W`` (or the pooled key grid, row-major, with ``kv_pool``).
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        reduction: int = 8,
        kv_pool: int = 1,
        value_channels: Optional[int] = None,
        scale: Optional[float] = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        _check_heads(name, "channels", channels, num_heads)
        if reduction < 1 or channels % reduction != 0:
            raise ValueError(f"{name}: channels={channels} is not divisible by reduction={reduction}")
        qk_channels = channels // reduction
        _check_heads(name, f"channels // reduction = {channels}//{reduction}", qk_channels, num_heads)
        value_channels = max(1, channels // 2) if value_channels is None else value_channels
        _check_heads(name, "value_channels", value_channels, num_heads)
        if not isinstance(kv_pool, int) or kv_pool < 1:
            raise ValueError(
                f"{name}: kv_pool must be a positive int (1 = off, 2 = BigGAN's 2x2 max-pool); got {kv_pool!r}"
            )
        self.channels = channels
        self.num_heads = num_heads
        self.kv_pool = kv_pool
        self.scale = scale
        self.query = nn.Conv2d(channels, qk_channels, 1, bias=False)
        self.key = nn.Conv2d(channels, qk_channels, 1, bias=False)
        self.value = nn.Conv2d(channels, value_channels, 1, bias=False)
        self.out_proj = nn.Conv2d(value_channels, channels, 1, bias=False)
        # ceil_mode: odd sizes keep their last row/column of keys.
        self.pool = nn.MaxPool2d(kv_pool, kv_pool, ceil_mode=True) if kv_pool > 1 else nn.Identity()
        self.gamma = nn.Parameter(torch.zeros(()))
        # Set by capture_attention(): called with the weights (B, heads, H*W, Nk) of each forward.
        self._capture: Optional[Callable[[Tensor], None]] = None

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_heads={self.num_heads}, kv_pool={self.kv_pool}"

    def _heads(self, t: Tensor) -> Tensor:
        """``(B, c, h, w)`` -> ``(B, heads, h*w, c / heads)``."""
        B, c, h, w = t.shape
        return t.reshape(B, self.num_heads, c // self.num_heads, h * w).transpose(-1, -2)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, C, H, W)`` -> ``(B, C, H, W)``; equal to ``x`` while ``gamma == 0``."""
        check_feature_map(x, self.channels, "NonLocalBlock2d")
        B, _, H, W = x.shape
        q = self._heads(self.query(x))
        k = self._heads(self.pool(self.key(x)))
        v = self._heads(self.pool(self.value(x)))
        capture = self._capture
        out, weights = attention_with_weights(q, k, v, need_weights=capture is not None, scale=self.scale)
        out = out.transpose(-1, -2).reshape(B, -1, H, W)
        if capture is not None and weights is not None:
            capture(weights)
        return x + self.gamma * self.out_proj(out)


class _HaloKV(torch.autograd.Function):
    """``kv (B, Hp + 2r, Wp + 2r, 2C)`` (channels last, zero-padded) -> the halo keys and values of every block with
    their tails, in one copy: ``(2, blocks, B * heads, Kh * Kw, d + t)``, ``[..., d:]`` = ``tail (2, Kh * Kw, t)`` (the
    one-hot code for keys, zeros for values). Backward: one scatter-add of the ``d`` columns over the flat ``index``
    (neighbouring halos overlap); the tail is a constant."""

    @staticmethod
    def forward(
        ctx, kv: Tensor, tail: Tensor, index: Tensor, heads: int, halo: Tuple[int, int], block: Tuple[int, int]
    ):
        B, Hpad, Wpad, C2 = kv.shape
        (Kh, Kw), d = halo, C2 // (2 * heads)
        windows = kv.unfold(1, Kh, block[0]).unfold(2, Kw, block[1])  # (B, nbh, nbw, 2C, Kh, Kw), a view
        nbh, nbw = windows.shape[1], windows.shape[2]
        windows = windows.unflatten(3, (2, heads, d)).permute(
            3, 1, 2, 0, 4, 6, 7, 5
        )  # (2, nbh, nbw, B, heads, Kh, Kw, d)
        out = torch.cat([windows, tail.view(2, 1, 1, 1, 1, Kh, Kw, -1).expand(-1, nbh, nbw, B, heads, -1, -1, -1)], -1)
        ctx.save_for_backward(index)
        ctx.geometry = (B, Hpad, Wpad, C2, heads, d, nbh, nbw, Kh, Kw)
        return out.view(2, nbh * nbw, B * heads, Kh * Kw, -1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        B, Hpad, Wpad, C2, heads, d, nbh, nbw, Kh, Kw = ctx.geometry
        g = grad.view(2, nbh, nbw, B, heads, Kh, Kw, -1)[..., :d].permute(3, 1, 2, 5, 6, 0, 4, 7)
        g = g.reshape(B, nbh * nbw * Kh * Kw, C2)  # (B, halo pixels, 2C): rows of 2C contiguous floats to add
        out = grad.new_zeros(B, Hpad * Wpad, C2).index_add_(1, index, g)
        return out.view(B, Hpad, Wpad, C2), None, None, None, None, None


# timm's fx tools (its feature extractor, the tracer of its tests) keep it whole: eager kernels, bit-identical outputs.
@register_notrace_module
class LocalSelfAttention2d(nn.Module):
    """Stand-alone local self-attention: each pixel attends exactly to its ``k x k`` neighbourhood.

    For the query at pixel ``(y, x)`` and head ``h``, the logit of the key at ``(y + dy, x + dx)``,
    ``|dy|, |dx| <= k // 2``, is ``q . (k + r[dy, dx]) / sqrt(head_dim)``, where ``r[dy, dx]`` concatenates a
    learned row-offset embedding (first ``head_dim // 2`` channels) and a column-offset one (the rest), per
    head (Ramachandran et al. 2019). Queries, keys and values are 1x1 convolutions; there is no output
    projection (a SASA bottleneck's next 1x1 convolution is one). With ``stride=2`` a 2x2 average pool follows
    the attention, as in the paper.

    Borders: pixels outside the image are **masked**, not attended as zeros: a border pixel's softmax runs over
    its in-image neighbours only. So the layer is exact (a pixel outside a query's window has no effect on it)
    and translation-equivariant inside the image.

    How (memory linear in ``H*W``; no ``(B, C, H, W, k*k)`` unfold): queries are cut into as few equal blocks of
    side at most ``block_size`` as cover the map (28 px, ``block_size=8``: 4 blocks of 7); each block attends to
    its block plus a halo of ``r = k // 2`` pixels (none along an axis that is a single block: that halo would
    lie outside the image), through the core's fused SDPA with a window mask (``(blocks, 1, b*b, (b+2r)^2)``,
    shared by batch and heads). The relative term ``q . r`` is added inside the dot product: each query is
    extended by its ``(b+2r)`` row and ``(b+2r)`` column terms and each key by the one-hot code of its row and
    column in the halo block, so ``q' . k' = q . k + q . r[dy, dx]`` exactly, and the fused kernel's backward
    carries the gradient of the embeddings (a learned additive mask would fall back to the materialising kernel).
    Queries, keys and values are projected channels-last, so the halo copies move runs of ``d`` floats.

    Args:
        channels: C, input and output channels; must be divisible by ``num_heads``.
        kernel_size: k, the window side; odd.
        num_heads: heads; ``channels // num_heads`` must be >= 2 (a row half and a column half).
        stride: 1, or s > 1 for an s x s average pool after the attention (output ``ceil(H/s) x ceil(W/s)``).
        qkv_bias: bias on the query/key/value projections (SASA: none).
        block_size: query block side b of the ``halo`` kernel (a speed/memory trade-off only; the result does not
            depend on it).
        backend: the kernel, all exact (see :mod:`vision_attn.layers.local_kernels`): ``"halo"`` (the blocked
            fused SDPA above), ``"unfold"`` (every window materialised; head size ``d``, no padding), ``"flex"``
            (PyTorch's FlexAttention with a neighbourhood block mask; head size ``d``; CUDA, or CPU without
            gradients), or ``"auto"``: always ``"halo"`` today, the kernel that measured fastest offline (nothing
            is timed at run time; see :meth:`pick_backend`).

    Capture: :func:`~vision_attn.attention.capture_attention` records ``(B, num_heads, H*W, k*k)``: for each
    query pixel (row-major, before any stride pooling) its weights over the window offsets
    ``(dy, dx)``, ``dy, dx = -k//2 .. k//2``, row-major; offsets outside the image have weight 0.
    :func:`vision_attn.run.viz.attention.window_weights_to_dense` turns them into ``(B, heads, H*W, H*W)`` maps.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        num_heads: int = 8,
        stride: int = 1,
        qkv_bias: bool = False,
        block_size: int = 8,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if backend not in LOCAL_BACKENDS:
            raise ValueError(f"{name}: backend must be one of {LOCAL_BACKENDS}; got backend={backend!r}")
        _check_heads(name, "channels", channels, num_heads)
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"{name}: kernel_size must be a positive odd int (the window is centred); got kernel_size={kernel_size!r}"
            )
        head_dim = channels // num_heads
        if head_dim < 2:
            raise ValueError(
                f"{name}: channels // num_heads = {channels}//{num_heads} = {head_dim}; need >= 2 channels per head "
                "(half for the row embedding, half for the column embedding)"
            )
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"{name}: stride must be a positive int; got stride={stride!r}")
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"{name}: block_size must be a positive int; got block_size={block_size!r}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.stride = stride
        self.block_size = block_size
        self.backend = backend
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=qkv_bias)
        self.rel_pos_h = nn.Parameter(torch.empty(num_heads, kernel_size, head_dim // 2))
        self.rel_pos_w = nn.Parameter(torch.empty(num_heads, kernel_size, head_dim - head_dim // 2))
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        # Set by capture_attention(): called with the weights (B, heads, H*W, k*k) of each forward.
        self._capture: Optional[Callable[[Tensor], None]] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.qkv.weight, mode="fan_out", nonlinearity="relu")
        if self.qkv.bias is not None:
            nn.init.zeros_(self.qkv.bias)
        # As timm's HaloNet / BoTNet relative embeddings: unit-variance logits for unit-variance queries.
        nn.init.normal_(self.rel_pos_h, std=self.head_dim**-0.5)
        nn.init.normal_(self.rel_pos_w, std=self.head_dim**-0.5)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, kernel_size={self.kernel_size}, num_heads={self.num_heads}, "
            f"stride={self.stride}, block_size={self.block_size}, backend={self.backend!r}"
        )

    def pick_backend(self, x: Tensor) -> str:
        """The kernel this call runs: ``backend``, or for ``"auto"`` always ``"halo"``: a fixed choice, not measured
        per call, from what ``python tools/benchmark.py pixel --only kernels kernels-inference --kernel-shapes sasa``
        measured on CPU (1 thread, SASA-26 shapes, 2026-12-03 at 665b9f8):

        * with gradients: ``halo`` (``unfold`` takes 4.3-9.4x its time and 2.6-9.7x its memory; ``flex`` has no CPU
          backward);
        * without: ``halo`` too: ``unfold`` takes 6.3-13x its time; ``flex`` takes 0.2-0.7x its memory but
          1.06-12x its time (it won on maps of 8x8 or fewer before the halo kernel dropped halos outside the
          image) and compiles once per new shape (seconds);
        * CUDA: ``halo`` until measured there (``flex`` is the candidate; pass ``backend="flex"`` to use it).
        """
        if self.backend != "auto":
            needs_grad = torch.is_grad_enabled() and (x.requires_grad or self.qkv.weight.requires_grad)
            if self.backend == "flex" and not flex_supported(x.device, needs_grad):
                raise RuntimeError(
                    f"{type(self).__name__}: backend='flex' needs FlexAttention with a backward on {x.device.type} "
                    "(torch has none on CPU): run under torch.no_grad(), on CUDA, or pick backend='halo'"
                )
            return self.backend
        return "halo"

    # --- blocked layout (the functions of local_kernels.py, with this layer's sizes) --------------------------
    def _layout(self, height: int, width: int) -> Tuple[int, int, int, int]:
        """Block sides ``(bh, bw)`` and block counts ``(nbh, nbw)`` for an ``height x width`` map."""
        return _halo_layout(height, width, self.block_size)

    def _halos(self, nbh: int, nbw: int) -> Tuple[int, int]:
        """The halo ``(hy, hx)`` around each block: ``k // 2``, or 0 along an axis that is one block."""
        r = self.kernel_size // 2
        return _halo_radius(nbh, r), _halo_radius(nbw, r)

    @staticmethod
    def _shifted(rel: Tensor, block: int, halo: int) -> Tensor:
        """``rel (heads, k, c)`` -> ``(heads, block, block + 2 * halo, c)``: ``[h, i, j] = rel[h, j - halo - i + k // 2]``
        (0 outside the window)."""
        return _shifted(rel, block, halo)

    def _window_mask(self, height: int, width: int, device) -> Tensor:
        """``(blocks, 1, bh*bw, Kh*Kw)`` bool, SDPA meaning (True = may attend): the key is in the query's window
        and inside the image (queries in the padding, whose outputs are dropped, see their whole window)."""
        return _halo_window_mask(height, width, self.kernel_size, self.block_size, device)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, C, H, W)`` -> ``(B, C, ceil(H/stride), ceil(W/stride))``."""
        check_feature_map(x, self.channels, "LocalSelfAttention2d")
        if torch.jit.is_scripting():  # all kernels are exact: TorchScript runs the plain halo one
            out, _ = halo_local_attention(self.qkv(x), self.rel_pos_h, self.rel_pos_w, self.num_heads, self.block_size)
            return self.pool(out)
        elif (
            is_fx_symbolic_tracing() and not torch.compiler.is_compiling()
        ):  # symbolic tracing, not torch.export / compile:
            # plain torch.fx (timm's tools keep this module whole) records one call, run with the graph
            out, _ = halo_local_attention(self.qkv(x), self.rel_pos_h, self.rel_pos_w, self.num_heads, self.block_size)
            return self.pool(out)
        backend = self.pick_backend(x)
        capture = self._capture
        if backend == "unfold" or (backend == "flex" and capture is None):  # flex returns no weights: halo does
            return self.pool(self._forward_sequence(x, backend))
        return self.pool(self._forward_halo(x))

    def _forward_sequence(self, x: Tensor, backend: str) -> Tensor:
        """The ``unfold`` and ``flex`` kernels, on ``(B, heads, H*W, d)`` sequences: ``x (B, C, H, W)`` -> same shape."""
        B, C, H, W = x.shape
        nh, d = self.num_heads, self.head_dim
        q, k, v = (t.reshape(B, nh, d, H * W).transpose(-1, -2) for t in self.qkv(x).chunk(3, dim=1))
        args = (self.rel_pos_h, self.rel_pos_w, H, W, d**-0.5)
        capture = self._capture
        if backend == "flex":
            out = flex_local_attention(q.contiguous(), k.contiguous(), v.contiguous(), *args)
        else:
            res = unfold_local_attention(q, k, v, *args, need_weights=capture is not None)
            if isinstance(res, tuple):
                out, weights = res
                if capture is not None:
                    capture(weights)
            else:
                out = res
        return out.transpose(-1, -2).reshape(B, C, H, W)

    def _cached(self, key: Tuple, make: Callable[[], Tensor]) -> Tensor:
        """Shape-only tensors (window mask, halo index, tails) kept per map size, device and dtype: built once, not per
        call, and never as inference tensors (a first call under ``torch.inference_mode`` must not break training)."""
        cache = self.__dict__.setdefault("_shape_cache", {})  # not a buffer: no state_dict key, rebuilt on a new device
        if key not in cache:
            with torch.inference_mode(False):
                made = make()
            if type(made) is not Tensor:  # a traced tensor (export, compile, fx): it must not outlive the trace
                return made
            if len(cache) >= 16:  # many map sizes (e.g. multi-scale inputs): start over rather than grow
                cache.clear()
            cache[key] = made
        return cache[key]

    def _halo_index(self, height: int, width: int, device) -> Tensor:
        """``(nblocks * Kh * Kw,)`` flat positions in the halo-padded map of each block's halo pixels, row-major."""
        bh, bw, nbh, nbw = self._layout(height, width)
        hy, hx = self._halos(nbh, nbw)
        Kh, Kw, Wpad = bh + 2 * hy, bw + 2 * hx, nbw * bw + 2 * hx
        ys = torch.arange(nbh, device=device)[:, None] * bh + torch.arange(Kh, device=device)  # (nbh, Kh)
        xs = torch.arange(nbw, device=device)[:, None] * bw + torch.arange(Kw, device=device)  # (nbw, Kw)
        return (ys[:, None, :, None] * Wpad + xs[None, :, None, :]).reshape(-1)

    @staticmethod
    def _halo_tail(Kh: int, Kw: int, device, dtype: torch.dtype) -> Tensor:
        """``(2, Kh * Kw, Kh + Kw)``: for keys the one-hot code of each halo key's row and column (so ``q' . k'`` adds
        the query's row and column terms), for values zeros (the fused kernel needs equal head sizes)."""
        code = torch.cat(
            [
                torch.eye(Kh, dtype=dtype, device=device).repeat_interleave(Kw, dim=0),
                torch.eye(Kw, dtype=dtype, device=device).repeat(Kh, 1),
            ],
            dim=1,
        )
        return torch.stack([code, torch.zeros_like(code)])

    def _float_mask(self, height: int, width: int, device, dtype: torch.dtype) -> Tensor:
        """:meth:`_window_mask` as an additive mask: 0 where a key may be attended, -inf where not."""
        allowed = self._window_mask(height, width, device)
        return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))

    def _qkv_channels_last(self, x: Tensor) -> Tensor:
        """The 1x1 projection as one matmul on ``x (B, C, H, W)`` read as ``(B, H*W, C)`` -> ``(B, H, W, 3C)``: the
        halo copies then move runs of ``d`` contiguous floats instead of single strided ones. Same products as the
        convolution (its weight, its bias)."""
        B, C, H, W = x.shape
        out = torch.matmul(x.flatten(2).transpose(1, 2), self.qkv.weight.view(3 * C, C).t())
        if self.qkv.bias is not None:
            out = out + self.qkv.bias
        return out.view(B, H, W, 3 * C)

    def _forward_halo(self, x: Tensor) -> Tensor:
        """The ``halo`` kernel: ``x (B, C, H, W)`` -> ``(B, C, H, W)`` (before the stride pool)."""
        B, C, H, W = x.shape
        nh, d = self.num_heads, self.head_dim
        bh, bw, nbh, nbw = self._layout(H, W)
        hy, hx = self._halos(nbh, nbw)
        Hp, Wp, Kh, Kw = nbh * bh, nbw * bw, bh + 2 * hy, bw + 2 * hx
        nblocks, dk = nbh * nbw, d + Kh + Kw
        qkv = self._qkv_channels_last(x)
        q, kv = qkv[..., :C], qkv[..., C:]  # views

        # Queries: (B, Hp, Wp, C) -> (nbh, nbw, B, heads, bh, bw, d), extended by their row and column terms.
        q = F.pad(q, (0, 0, 0, Wp - W, 0, Hp - H)).view(B, nbh, bh, nbw, bw, nh, d).permute(1, 3, 0, 5, 2, 4, 6)
        dr = d // 2
        rows = torch.einsum("abnhijc,hikc->abnhijk", q[..., :dr], self._shifted(self.rel_pos_h, bh, hy))
        cols = torch.einsum("abnhijc,hjkc->abnhijk", q[..., dr:], self._shifted(self.rel_pos_w, bw, hx))
        q = torch.cat([q, rows, cols], dim=-1).reshape(nblocks, B * nh, bh * bw, dk)

        # Keys and values: each block's (bh + 2hy) x (bw + 2hx) halo of the zero-padded map (the padding is masked
        # below), with k' = [k, code] and v' = [v, 0] written in the same copy.
        kv = F.pad(kv, (0, 0, hx, hx + Wp - W, hy, hy + Hp - H))
        index = self._cached(("halo", H, W, x.device), lambda: self._halo_index(H, W, x.device))
        tail = self._cached(("tail", Kh, Kw, x.device, x.dtype), lambda: self._halo_tail(Kh, Kw, x.device, x.dtype))
        k, v = _HaloKV.apply(kv, tail, index, nh, (Kh, Kw), (bh, bw)).unbind(0)

        # The window mask as SDPA's additive float mask (what it turns a boolean one into on every call), cached.
        mask = self._cached(("mask", H, W, x.device, q.dtype), lambda: self._float_mask(H, W, x.device, q.dtype))
        capture = self._capture
        out, weights = attention_with_weights(q, k, v, mask, need_weights=capture is not None, scale=d**-0.5)
        out = (
            out[..., :d]
            .reshape(nbh, nbw, B, nh, bh, bw, d)
            .permute(2, 3, 6, 0, 4, 1, 5)
            .reshape(B, C, Hp, Wp)[:, :, :H, :W]
        )
        if capture is not None and weights is not None:
            capture(self._window_weights(weights, B, H, W))
        return out

    def _window_weights(self, weights: Tensor, batch: int, height: int, width: int) -> Tensor:
        """Blocked weights ``(blocks, B*heads, bh*bw, Kh*Kw)`` -> per-pixel window weights ``(B, heads, H*W, k*k)``."""
        return _halo_window_weights(weights, batch, self.num_heads, height, width, self.kernel_size, self.block_size)
