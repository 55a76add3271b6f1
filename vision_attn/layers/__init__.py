"""Floor 2: layers built on the attention core."""

from .conv_attention import ConvAttention2d, attention_from_conv, conv_attention_unsupported, convert_convs_to_attention
from .detr_transformer import DetrTransformer
from .patch_embed import PatchEmbed, check_image_input, check_image_size
from .pixel_attention import LocalSelfAttention2d, NonLocalBlock2d
from .spectral_norm import SpectralNorm, spectral_norm
from .transformer import TransformerEncoderLayer

__all__ = [
    "PatchEmbed",
    "check_image_input",
    "check_image_size",
    "TransformerEncoderLayer",
    "NonLocalBlock2d",
    "LocalSelfAttention2d",
    "ConvAttention2d",
    "attention_from_conv",
    "convert_convs_to_attention",
    "conv_attention_unsupported",
    "DetrTransformer",
    "SpectralNorm",
    "spectral_norm",
]
