"""timm ViT weights <-> ours: two renames in every block, and learned positions resampled to our patch grid.

timm's ``vision_transformer.py`` and :class:`~vision_attn.models.vit.VisionTransformer` share every other key, so a
timm checkpoint (or ours) loads by this explicit map and gives timm's outputs; :func:`to_timm` is the way back.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Protocol

from torch import Tensor

from ...attention import resample_abs_pos_embed
from ...layers import PatchEmbed

__all__ = ["vit_state_dict_from_timm", "to_timm", "ViTWeightsTarget"]


class ViTWeightsTarget(Protocol):
    """What these maps read from the ViT they fill or export (:class:`~vision_attn.models.vit.VisionTransformer`
    has each; declared here because ``weights/`` imports no model)."""

    @property
    def pos_embed(self) -> Optional[Tensor]: ...  # (1, P + h*w, D), None without learned positions

    @property
    def num_prefix_tokens(self) -> int: ...

    @property
    def embed_dim(self) -> int: ...

    @property
    def patch_embed(self) -> PatchEmbed: ...

    @property
    def pos_embed_kind(self) -> str: ...

    @property
    def attn_window(self) -> Optional[int]: ...

    def state_dict(self) -> Dict[str, Any]: ...


def vit_state_dict_from_timm(state_dict: Dict[str, Tensor], model: ViTWeightsTarget) -> Dict[str, Tensor]:
    """Map a timm ViT state dict (or ours) onto ``model`` (a :class:`~vision_attn.models.vit.VisionTransformer`).

    timm ``blocks.i.attn.qkv.*`` -> ``blocks.i.attn.in_proj_*``, ``blocks.i.attn.proj.*`` ->
    ``blocks.i.attn.out_proj.*``; every other key is the same. ``pos_embed (1, P + h*w, D)`` is resampled (bicubic,
    the ``P`` prefix tokens kept) from the checkpoint's square grid to the model's when they differ; a checkpoint
    without ``pos_embed`` for a model with learned positions is then rejected by ``load_pretrained`` (missing key).
    """
    out: Dict[str, Tensor] = {}
    for k, v in state_dict.items():
        if ".attn.qkv." in k:
            k = k.replace(".attn.qkv.weight", ".attn.in_proj_weight").replace(".attn.qkv.bias", ".attn.in_proj_bias")
        elif ".attn.proj." in k:
            k = k.replace(".attn.proj.", ".attn.out_proj.")
        elif ".attn.q_norm." in k or ".attn.k_norm." in k:
            raise ValueError(f"checkpoint key {k}: qk-norm ViTs are not supported by this model")
        out[k] = v
    if model.pos_embed is not None and "pos_embed" in out and out["pos_embed"].shape != model.pos_embed.shape:
        pe = out["pos_embed"]
        n_prefix = model.num_prefix_tokens
        n_grid = pe.shape[1] - n_prefix
        side = int(math.isqrt(n_grid))
        if side * side != n_grid or pe.shape[-1] != model.embed_dim:
            raise ValueError(
                f"checkpoint pos_embed {tuple(pe.shape)} cannot be resampled to {tuple(model.pos_embed.shape)}"
            )
        out["pos_embed"] = resample_abs_pos_embed(pe, model.patch_embed.grid_size, (side, side), n_prefix)
    return out


def to_timm(model: ViTWeightsTarget) -> Dict[str, Tensor]:
    """Our ViT's weights in timm's key layout (``attn.in_proj_*`` -> ``attn.qkv.*``, ``attn.out_proj.*`` ->
    ``attn.proj.*``): timm's ``VisionTransformer`` of the same shape (``global_pool``, ``class_token``, ``img_size``,
    ``init_values``, ...) loads it strictly and gives our outputs. Save it with ``safetensors.torch.save_file``.

    Raises ``ValueError`` for what timm's ViT cannot express: 2-D sine positions, and an ``attn_window`` (the weights
    would load but timm's global attention gives other outputs).
    """
    if model.pos_embed_kind == "sine":
        raise ValueError("to_timm: this ViT uses 2-D sine positions (pos_embed='sine'), which timm's ViT does not have")
    if model.attn_window is not None:
        raise ValueError(
            f"to_timm: this ViT restricts attention to a {model.attn_window}x{model.attn_window} window; "
            "timm's ViT attends globally, so its outputs would differ"
        )
    out: Dict[str, Tensor] = {}
    for k, v in model.state_dict().items():
        k = k.replace(".attn.in_proj_weight", ".attn.qkv.weight").replace(".attn.in_proj_bias", ".attn.qkv.bias")
        out[k.replace(".attn.out_proj.", ".attn.proj.")] = v.detach().clone()
    return out
