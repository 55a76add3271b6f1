"""Floor 1: the attention core, masks, position encodings and attention capture."""

from .capture import capture_attention
from .core import (
    MultiHeadAttention,
    attention_weights,
    attention_with_weights,
    flex_attention,
    scaled_dot_product_attention,
    to_sdpa_mask,
)
from .masks import adjacency_mask, local_window_mask, with_prefix_tokens
from .position import (
    POS_EMBED_KINDS,
    resample_abs_pos_embed,
    sine_position_encoding_2d,
    sine_position_grid,
)

__all__ = [
    "MultiHeadAttention",
    "scaled_dot_product_attention",
    "attention_with_weights",
    "flex_attention",
    "attention_weights",
    "to_sdpa_mask",
    "capture_attention",
    "local_window_mask",
    "adjacency_mask",
    "with_prefix_tokens",
    "POS_EMBED_KINDS",
    "resample_abs_pos_embed",
    "sine_position_encoding_2d",
    "sine_position_grid",
]
