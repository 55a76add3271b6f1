"""Floor 2: layers built on the attention core."""
from .patch_embed import PatchEmbed, check_image_input
from .transformer import TransformerEncoderLayer

__all__ = ["PatchEmbed", "check_image_input", "TransformerEncoderLayer"]
