"""The one multi-head attention core every model of vision_attn stands on.

Parameters are named as in ``torch.nn.MultiheadAttention`` (``in_proj_weight``, ``in_proj_bias``,
``out_proj``), so DETR's official checkpoints load by copy and timm's ViT weights by a rename
(``qkv`` -> ``in_proj``, ``proj`` -> ``out_proj``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List, Optional, Tuple, Union

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # imported where used: FlexAttention is an optional, heavy corner of torch
    from torch.nn.attention.flex_attention import BlockMask

__all__ = [
    "MultiHeadAttention",
    "scaled_dot_product_attention",
    "attention_with_weights",
    "flex_attention",
    "attention_weights",
    "to_sdpa_mask",
    "shape_str",
]


def shape_str(shape: List[int]) -> str:
    """A shape as Python prints a tuple (``(2, 5, 8)``), for error messages that also compile in TorchScript."""
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join([str(s) for s in shape]) + ")"


def to_sdpa_mask(
    attn_mask: Optional[Tensor],
    key_padding_mask: Optional[Tensor],
    batch: int,
    num_heads: int,
    nq: int,
    nk: int,
    dtype: torch.dtype,
) -> Optional[Tensor]:
    """Combine ``nn.MultiheadAttention``-style masks into one mask for ``F.scaled_dot_product_attention``.

    Args:
        attn_mask: ``(Nq, Nk)``, ``(B * H, Nq, Nk)`` or 4-D broadcastable to ``(B, H, Nq, Nk)``;
            bool ``True`` = may not attend, float = added to the scores.
        key_padding_mask: ``(B, Nk)``; bool ``True`` = padding, float = added.

    Returns:
        ``None``, a bool mask with SDPA's meaning (``True`` = may attend) when every input is bool,
        or an additive float mask; broadcastable to ``(B, H, Nq, Nk)``.
    """
    parts: List[Tensor] = []
    if attn_mask is not None:
        m: Optional[Tensor] = None
        shape = list(attn_mask.shape)
        if attn_mask.dim() == 2:
            if shape == [nq, nk]:
                m = attn_mask.view(1, 1, nq, nk)
        elif attn_mask.dim() == 3:
            if shape == [batch * num_heads, nq, nk]:
                m = attn_mask.view(batch, num_heads, nq, nk)
        elif attn_mask.dim() == 4:
            ok = shape[-2:] == [nq, nk]
            for s, want in zip(shape, [batch, num_heads, nq, nk]):
                ok = ok and (s == 1 or s == want)
            if ok:
                m = attn_mask
        if m is None:
            raise ValueError(
                f"attn_mask has shape {shape_str(shape)}; expected (Nq, Nk)=({nq}, {nk}), "
                f"(B*H, Nq, Nk)=({batch * num_heads}, {nq}, {nk}) or 4-D broadcastable to ({batch}, {num_heads}, {nq}, {nk})"
            )
        parts.append(m)
    if key_padding_mask is not None:
        if list(key_padding_mask.shape) != [batch, nk]:
            raise ValueError(
                f"key_padding_mask has shape {shape_str(list(key_padding_mask.shape))}; expected (B, Nk)=({batch}, {nk})"
            )
        parts.append(key_padding_mask.view(batch, 1, 1, nk))
    if len(parts) == 0:
        return None
    if all([p.dtype == torch.bool for p in parts]):
        blocked = parts[0] if len(parts) == 1 else parts[0] | parts[1]
        return ~blocked
    total: Optional[Tensor] = None
    for p in parts:
        if p.dtype == torch.bool:
            p = torch.zeros(p.shape, dtype=dtype, device=p.device).masked_fill_(p, float("-inf"))
        else:
            p = p.to(dtype)
        if total is None:
            total = p
        else:
            total = total + p
    return total


# torch.fx records this as one call (its shape checks run when the graph runs, not while it is traced).
torch.fx.wrap("to_sdpa_mask")


def attention_weights(q: Tensor, k: Tensor, mask: Optional[Tensor] = None, scale: Optional[float] = None) -> Tensor:
    """Softmax attention probabilities, the matrix the fused kernels never materialise.

    Args:
        q: ``(B, H, Nq, hd)``; k: ``(B, H, Nk, hd)``; mask: an SDPA mask from :func:`to_sdpa_mask`.

    Returns:
        ``(B, H, Nq, Nk)``, rows summing to 1 (computed in float32, returned in ``q.dtype``).
    """
    if scale is None:
        scale = q.shape[-1] ** -0.5
    scores = torch.matmul(q.float(), k.float().transpose(-2, -1)) * scale
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    return scores.softmax(dim=-1).to(q.dtype)


def _unit_stride(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _fused_attention(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], dropout_p: float, scale: float) -> Tensor:
    """``F.scaled_dot_product_attention`` on unit-stride ``q, k, v``, the smaller head size zero-padded (see below)."""
    dk, dv = q.shape[-1], v.shape[-1]
    qp, kp, vp = q, k, v
    if dk < dv:
        qp, kp = F.pad(q, (0, dv - dk)), F.pad(k, (0, dv - dk))
    elif dv < dk:
        vp = F.pad(v, (0, dk - dv))
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    if dv < dk:
        out = out[..., :dv]
    return out


# One fx node each: they branch on strides and head sizes, which fx cannot branch on while tracing.
torch.fx.wrap("_unit_stride")
torch.fx.wrap("_fused_attention")


def attention_with_weights(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    scale: Optional[float] = None,
) -> Tuple[Tensor, Optional[Tensor]]:
    """:func:`scaled_dot_product_attention` with a fixed return type (TorchScript has no use for its Union):
    ``(out (B, H, Nq, dv), weights (B, H, Nq, Nk) or None)``."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    # The fused kernels (CPU flash, CUDA flash / memory-efficient) need a unit stride on the last dim and
    # equal head sizes; otherwise SDPA silently falls back to the kernel that materialises Nq x Nk.
    # A permuted view is fine as it is (a copy would cost ~15% of fwd+bwd time); zero-padding the
    # smaller head size keeps every dot product, and so the result, unchanged.
    q, k, v = _unit_stride(q), _unit_stride(k), _unit_stride(v)
    out = _fused_attention(q, k, v, mask, dropout_p, scale)
    weights: Optional[Tensor] = None
    if need_weights:
        with torch.no_grad():
            weights = attention_weights(q, k, mask, scale)
    return out, weights


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    scale: Optional[float] = None,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """The project's single softmax(QK^T * scale)V, through ``F.scaled_dot_product_attention``.

    Args:
        q: ``(B, H, Nq, dk)``; k: ``(B, H, Nk, dk)``; v: ``(B, H, Nk, dv)`` (``dv`` may differ from ``dk``);
        mask: an SDPA mask (bool True = may attend, or additive float), broadcastable to ``(B, H, Nq, Nk)``.
        scale: score scale, default ``dk ** -0.5``.

    Returns:
        ``(B, H, Nq, dv)``; with ``need_weights`` also the weights ``(B, H, Nq, Nk)``. The output is the
        fused kernel's in both cases; the weights are computed beside it, so asking for them never changes it.
    """
    out, weights = attention_with_weights(q, k, v, mask, dropout_p, need_weights, scale)
    if weights is not None:
        return out, weights
    return out


_COMPILED_FLEX: Optional[Callable[..., Tensor]] = None
# The smallest head size FlexAttention's kernels take, per device type: its CUDA (Triton) kernels need >= 16
# ("NYI: embedding dimension ... must be at least 16"); smaller heads are zero-padded to it.
FLEX_MIN_HEAD_DIM = {"cuda": 16}


def flex_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    score_mod: Optional[Callable] = None,
    block_mask: Optional[BlockMask] = None,
    scale: Optional[float] = None,
) -> Tensor:
    """The core's sparse softmax(QK^T * scale + score_mod)V: PyTorch's FlexAttention, for attention whose mask is
    known as a rule (``block_mask`` from ``torch.nn.attention.flex_attention.create_block_mask``: key blocks no query
    of a block can see are skipped) and whose scores get a term computed in the kernel (``score_mod``).

    ``q, k (B, H, N, dk)``, ``v (B, H, N, dv)`` -> ``(B, H, Nq, dv)``; ``scale`` defaults to ``dk ** -0.5``. Eager
    calls go through one ``torch.compile``-d FlexAttention (one graph per shape; eager FlexAttention would
    materialise every score); inside a compiled caller it is traced as is. Heads smaller than the device's kernels
    take (:data:`FLEX_MIN_HEAD_DIM`: 16 on CUDA) are zero-padded, which leaves every score and output unchanged.
    torch has no CPU backward for it (see ``LocalSelfAttention2d(backend="flex")``)."""
    from torch.nn.attention.flex_attention import flex_attention as _flex

    global _COMPILED_FLEX
    dk, dv = q.shape[-1], v.shape[-1]
    scale = dk**-0.5 if scale is None else scale
    least = FLEX_MIN_HEAD_DIM.get(q.device.type, 1)
    if dk < least:
        q, k = F.pad(q, (0, least - dk)), F.pad(k, (0, least - dk))
    if dv < least:
        v = F.pad(v, (0, least - dv))
    run: Callable[..., Tensor]
    if torch.compiler.is_compiling():
        run = _flex
    else:
        _COMPILED_FLEX = _COMPILED_FLEX or torch.compile(_flex, dynamic=False)
        run = _COMPILED_FLEX
    out = run(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    return out[..., :dv] if out.shape[-1] != dv else out


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention, batch first.

    Args:
        dim: model width D (query width and output width).
        num_heads: H; ``dim`` must be divisible by it.
        qkv_bias: bias on the query/key/value projections.
        attn_drop: dropout on the attention probabilities (training only).
        proj_drop: dropout after the output projection.
        kdim, vdim: key and value input widths (default ``dim``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        kdim: Optional[int] = None,
        vdim: Optional[int] = None,
    ) -> None:
        super().__init__()
        if num_heads <= 0 or dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.kdim = dim if kdim is None else kdim
        self.vdim = dim if vdim is None else vdim
        self.same_dims = self.kdim == dim and self.vdim == dim
        if self.same_dims:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = nn.Parameter(torch.empty(dim, dim))
            self.k_proj_weight = nn.Parameter(torch.empty(dim, self.kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(dim, self.vdim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim)) if qkv_bias else None
        self.attn_drop = attn_drop
        self.out_proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # Set by capture_attention(): called with the weights (B, H, Nq, Nk) of each forward.
        self._capture: Optional[Callable[[Tensor], None]] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for w in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if w is not None:
                nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def extra_repr(self) -> str:
        s = f"dim={self.dim}, num_heads={self.num_heads}"
        if not self.same_dims:
            s += f", kdim={self.kdim}, vdim={self.vdim}"
        return s

    def _weights(self) -> Tuple[Tensor, Tensor, Tensor]:
        w = self.in_proj_weight
        if w is not None:
            wq, wk, wv = w.chunk(3)
            return wq, wk, wv
        wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        assert wq is not None and wk is not None and wv is not None  # TorchScript: set whenever in_proj_weight is not
        return wq, wk, wv

    def _biases(self) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        b = self.in_proj_bias
        if b is None:
            return None, None, None
        bq, bk, bv = b.chunk(3)
        return bq, bk, bv

    def _project(self, query: Tensor, key: Tensor, value: Tensor, self_attn: bool) -> Tuple[Tensor, Tensor, Tensor]:
        """Project to heads: returns q ``(B, H, Nq, hd)``, k and v ``(B, H, Nk, hd)``."""
        B, Nq, _ = query.shape
        Nk = key.shape[1]
        H, hd = self.num_heads, self.head_dim
        w = self.in_proj_weight
        if self_attn and w is not None:
            # One matmul for q, k and v.
            qkv = F.linear(query, w, self.in_proj_bias)
            q, k, v = qkv.view(B, Nq, 3, H, hd).permute(2, 0, 3, 1, 4).unbind(0)
            return q, k, v
        wq, wk, wv = self._weights()
        bq, bk, bv = self._biases()
        q = F.linear(query, wq, bq)
        if key is value and w is not None:
            b = self.in_proj_bias
            kv = F.linear(key, w[self.dim :], None if b is None else b[self.dim :])
            k, v = kv.view(B, Nk, 2, H, hd).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            k = F.linear(key, wk, bk).view(B, Nk, H, hd).transpose(1, 2)
            v = F.linear(value, wv, bv).view(B, Nk, H, hd).transpose(1, 2)
        return q.view(B, Nq, H, hd).transpose(1, 2), k, v

    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor] = None,
        value: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
        need_weights: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Attend from ``query`` to ``key``/``value``.

        Args:
            query: ``(B, Nq, D)``.
            key: ``(B, Nk, kdim)``; defaults to ``query`` (self-attention).
            value: ``(B, Nk, vdim)``; defaults to ``key``.
            attn_mask: ``(Nq, Nk)``, ``(B*H, Nq, Nk)`` or broadcastable to ``(B, H, Nq, Nk)``;
                bool True = may not attend, float = added to the scores.
            key_padding_mask: ``(B, Nk)``; bool True = padding (ignored key), float = added.
            need_weights: also return the attention probabilities.

        Pass the masks and ``need_weights`` by keyword (they are not keyword-only because TorchScript refuses those).

        Returns:
            ``out (B, Nq, D)``, or ``(out, weights (B, H, Nq, Nk))`` with ``need_weights=True``;
            ``out`` is the same either way.
        """
        self_attn = key is None and value is None
        if key is None:
            key = query
        if value is None:
            value = key
        check_qkv(query, key, value, self.dim, self.kdim, self.vdim)
        B, Nq, _ = query.shape
        Nk = key.shape[1]
        q, k, v = self._project(query, key, value, self_attn)
        mask: Optional[Tensor] = None
        if attn_mask is not None or key_padding_mask is not None:
            mask = to_sdpa_mask(attn_mask, key_padding_mask, B, self.num_heads, Nq, Nk, q.dtype)
        capture = self._capture
        want_weights = need_weights or capture is not None
        dropout_p = self.attn_drop if self.training else 0.0
        out, weights = attention_with_weights(q, k, v, mask, dropout_p, need_weights=want_weights)
        out = out.transpose(1, 2).reshape(B, Nq, self.dim)
        out = self.proj_drop(self.out_proj(out))
        if capture is not None and weights is not None:  # weights are computed whenever capture is set
            capture(weights)
        if need_weights and weights is not None:
            return out, weights
        return out


def check_qkv(query: Tensor, key: Tensor, value: Tensor, dim: int, kdim: int, vdim: int) -> None:
    """Raise a ValueError naming the input unless ``query (B, Nq, dim)``, ``key (B, Nk, kdim)``, ``value (B, Nk, vdim)``."""
    if query.dim() != 3 or query.shape[-1] != dim:
        raise ValueError(f"query has shape {shape_str(list(query.shape))}; expected (B, Nq, D) with D={dim}")
    if key.dim() != 3 or key.shape[-1] != kdim or key.shape[0] != query.shape[0]:
        raise ValueError(
            f"key has shape {shape_str(list(key.shape))}; expected (B, Nk, kdim)=({query.shape[0]}, Nk, {kdim})"
        )
    if value.dim() != 3 or value.shape[-1] != vdim or value.shape[:2] != key.shape[:2]:
        raise ValueError(
            f"value has shape {shape_str(list(value.shape))}; expected (B, Nk, vdim)=({key.shape[0]}, {key.shape[1]}, {vdim})"
        )


# Checks run when an fx graph runs (one node), not while it is traced: fx cannot branch on traced shapes.
torch.fx.wrap("check_qkv")
