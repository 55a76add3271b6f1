"""DETR's encoder-decoder transformer (Carion et al. 2020) on the shared attention core.

Post-norm layers as in the original: positions are added to the queries and keys of every attention (never to
the values), the object queries are learned query positions added at every decoder layer, and the decoder
returns every layer's output through one final norm (for the auxiliary losses). Submodule names follow
facebookresearch/detr ``models/transformer.py`` (``encoder.layers.N.self_attn.in_proj_weight``, ``linear1``,
``linear2``, ``norm1..3``, ``decoder.layers.N.multihead_attn``, ``decoder.norm``), so the official checkpoints
load by copying keys. Everything is batch first.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import MultiHeadAttention

__all__ = ["DetrEncoderLayer", "DetrDecoderLayer", "DetrEncoder", "DetrDecoder", "DetrTransformer"]

_ACTIVATIONS: Dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}


def _activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}; got {name!r}")
    return _ACTIVATIONS[name]


def _with_pos(x: Tensor, pos: Optional[Tensor]) -> Tensor:
    return x if pos is None else x + pos


class DetrEncoderLayer(nn.Module):
    """Self-attention over the image features, then a feed-forward block; each with a residual and a norm.

    Args:
        d_model: token width D; nhead: heads; dim_feedforward: hidden width of the feed-forward block.
        dropout: on the attention probabilities, after attention, and inside/after the feed-forward block.
        activation: ``"relu"`` (DETR) or ``"gelu"``.
        normalize_before: pre-norm instead of DETR's post-norm.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead, attn_drop=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.normalize_before = normalize_before

    def _attend(
        self, x: Tensor, pos: Optional[Tensor], key_padding_mask: Optional[Tensor], attn_mask: Optional[Tensor]
    ) -> Tensor:
        qk = _with_pos(x, pos)
        return self.self_attn(qk, qk, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask)

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(
        self,
        src: Tensor,
        pos: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """``src (B, N, D)`` image tokens, ``pos (B, N, D)`` their positions, ``key_padding_mask (B, N)`` bool
        True on padding -> ``(B, N, D)``."""
        if self.normalize_before:
            src = src + self.dropout1(self._attend(self.norm1(src), pos, key_padding_mask, attn_mask))
            return src + self.dropout2(self._feed_forward(self.norm2(src)))
        src = self.norm1(src + self.dropout1(self._attend(src, pos, key_padding_mask, attn_mask)))
        return self.norm2(src + self.dropout2(self._feed_forward(src)))


class DetrDecoderLayer(nn.Module):
    """Self-attention among the object queries, cross-attention from the queries to the image features, then a
    feed-forward block; each with a residual and a norm. Arguments as :class:`DetrEncoderLayer`."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead, attn_drop=dropout)
        self.multihead_attn = MultiHeadAttention(d_model, nhead, attn_drop=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.normalize_before = normalize_before

    def _self_attend(self, x: Tensor, query_pos: Optional[Tensor]) -> Tensor:
        qk = _with_pos(x, query_pos)
        return self.self_attn(qk, qk, x)

    def _cross_attend(
        self,
        x: Tensor,
        memory: Tensor,
        pos: Optional[Tensor],
        query_pos: Optional[Tensor],
        memory_key_padding_mask: Optional[Tensor],
    ) -> Tensor:
        return self.multihead_attn(
            _with_pos(x, query_pos), _with_pos(memory, pos), memory, key_padding_mask=memory_key_padding_mask
        )

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """``tgt (B, Q, D)`` query states, ``memory (B, N, D)`` encoded image tokens, ``pos (B, N, D)`` their
        positions, ``query_pos (B, Q, D)`` the object queries, ``memory_key_padding_mask (B, N)`` bool True on
        padding -> ``(B, Q, D)``."""
        if self.normalize_before:
            tgt = tgt + self.dropout1(self._self_attend(self.norm1(tgt), query_pos))
            tgt = tgt + self.dropout2(
                self._cross_attend(self.norm2(tgt), memory, pos, query_pos, memory_key_padding_mask)
            )
            return tgt + self.dropout3(self._feed_forward(self.norm3(tgt)))
        tgt = self.norm1(tgt + self.dropout1(self._self_attend(tgt, query_pos)))
        tgt = self.norm2(tgt + self.dropout2(self._cross_attend(tgt, memory, pos, query_pos, memory_key_padding_mask)))
        return self.norm3(tgt + self.dropout3(self._feed_forward(tgt)))


class DetrEncoder(nn.Module):
    """``num_layers`` copies of an encoder layer, with an optional final norm (pre-norm only)."""

    def __init__(self, encoder_layer: DetrEncoderLayer, num_layers: int, norm: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src: Tensor, pos: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """``src (B, N, D)``, ``pos (B, N, D)``, ``key_padding_mask (B, N)`` -> ``(B, N, D)``."""
        for layer in self.layers:
            src = layer(src, pos=pos, key_padding_mask=key_padding_mask)
        return src if self.norm is None else self.norm(src)


class DetrDecoder(nn.Module):
    """``num_layers`` copies of a decoder layer and the final norm applied to the output of every layer."""

    def __init__(
        self, decoder_layer: DetrDecoderLayer, num_layers: int, norm: nn.Module, return_intermediate: bool = True
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(decoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm
        self.return_intermediate = return_intermediate

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """Shapes as :meth:`DetrDecoderLayer.forward`. Returns ``(L, B, Q, D)``: ``norm`` of every layer's output
        (``L = num_layers``) with ``return_intermediate``, else only the last one (``L = 1``)."""
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, pos=pos, query_pos=query_pos, memory_key_padding_mask=memory_key_padding_mask)
            if self.return_intermediate:
                outputs.append(self.norm(tgt))  # the next layer reads the un-normalised state, as in DETR
        if not self.return_intermediate:
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class DetrTransformer(nn.Module):
    """DETR's transformer: an encoder over the flattened image features and a decoder over the object queries.

    Args:
        d_model: token width D (DETR: 256); nhead: heads (8).
        num_encoder_layers, num_decoder_layers: depths (6, 6).
        dim_feedforward: feed-forward hidden width (2048); dropout: (0.1).
        activation: ``"relu"`` or ``"gelu"``; normalize_before: pre-norm layers (DETR's ``--pre_norm``), which
            adds a final encoder norm ``encoder.norm``.
        return_intermediate_dec: the decoder returns every layer's normalised output (for auxiliary losses).
    """

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
        return_intermediate_dec: bool = True,
    ) -> None:
        super().__init__()
        encoder_layer = DetrEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation, normalize_before)
        self.encoder = DetrEncoder(
            encoder_layer, num_encoder_layers, nn.LayerNorm(d_model) if normalize_before else None
        )
        decoder_layer = DetrDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation, normalize_before)
        self.decoder = DetrDecoder(decoder_layer, num_decoder_layers, nn.LayerNorm(d_model), return_intermediate_dec)
        self.d_model = d_model
        self.nhead = nhead
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self, src: Tensor, mask: Optional[Tensor], query_embed: Tensor, pos_embed: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """Encode the image features and decode the object queries.

        Args:
            src: ``(B, D, h, w)`` projected backbone features.
            mask: ``(B, h, w)`` bool, True on padding; None when nothing is padded (lets the fused attention
                kernels that take no mask run).
            query_embed: ``(Q, D)`` learned object queries (the decoder's query positions).
            pos_embed: ``(B, D, h, w)`` positions of the features.

        Returns:
            ``hs (L, B, Q, D)`` decoder outputs (see :class:`DetrDecoder`) and ``memory (B, D, h, w)``, the encoder
            output.
        """
        if src.dim() != 4 or src.shape[1] != self.d_model:
            raise ValueError(f"src has shape {tuple(src.shape)}; expected (B, D, h, w) with D={self.d_model}")
        B, D, h, w = src.shape
        if mask is not None and mask.shape != (B, h, w):
            raise ValueError(f"mask has shape {tuple(mask.shape)}; expected (B, h, w)=({B}, {h}, {w})")
        if pos_embed.shape != src.shape:
            raise ValueError(f"pos_embed has shape {tuple(pos_embed.shape)}; expected (B, D, h, w)={tuple(src.shape)}")
        if query_embed.dim() != 2 or query_embed.shape[1] != D:
            raise ValueError(f"query_embed has shape {tuple(query_embed.shape)}; expected (Q, D) with D={D}")
        src_tokens = src.flatten(2).transpose(1, 2)
        pos = pos_embed.flatten(2).transpose(1, 2)
        key_padding_mask = None if mask is None else mask.flatten(1)
        query_pos = query_embed.unsqueeze(0).expand(B, -1, -1)
        memory = self.encoder(src_tokens, pos=pos, key_padding_mask=key_padding_mask)
        tgt = torch.zeros_like(query_pos, dtype=memory.dtype)
        hs = self.decoder(tgt, memory, pos=pos, query_pos=query_pos, memory_key_padding_mask=key_padding_mask)
        return hs, memory.transpose(1, 2).reshape(B, D, h, w)
