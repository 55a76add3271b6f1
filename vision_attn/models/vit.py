"""Vision Transformer (Dosovitskiy et al. 2021) on the shared attention core.

Parameter names and hyper-parameters follow timm's ``vision_transformer.py``, so timm's weights load
by an explicit rename (:meth:`VisionTransformer.checkpoint_filter_fn`, mapped in
:mod:`vision_attn.models.weights.timm_vit`) and give timm's outputs.
"""

from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.fx
from timm.layers import trunc_normal_
from timm.models._features import feature_take_indices  # private: timm (1.0.x) exports it nowhere public
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..attention import (
    POS_EMBED_KINDS,
    local_window_mask,
    resample_abs_pos_embed,
    sine_position_grid,
    with_prefix_tokens,
)
from ..layers import PatchEmbed, TransformerEncoderLayer, check_image_input, check_image_size
from .hub import PretrainedMixin
from .registry import register_model
from .weights import to_timm, vit_state_dict_from_timm

__all__ = ["VisionTransformer", "GLOBAL_POOLS"]

# timm's ViT pooling: "" = none (tokens go to the head), the class token, or avg / max / avgmax over patch tokens.
GLOBAL_POOLS = ("", "token", "avg", "max", "avgmax")

# fx records the input checks as calls run with the graph (it cannot branch on traced shapes while tracing).
torch.fx.wrap("check_image_input")
torch.fx.wrap("check_image_size")


def _index_list(indices: Optional[Union[int, Sequence[int]]]) -> Optional[Union[int, List[int]]]:
    """Block indices as timm's ``feature_take_indices`` types them (an int, a list or None)."""
    return indices if indices is None or isinstance(indices, int) else list(indices)


@torch.jit.ignore
def _resampled_pos_embed(
    pos: Tensor, grid: Tuple[int, int], old_grid: Tuple[int, int], num_prefix_tokens: int
) -> Tensor:
    """``dynamic_img_size``: learned positions resampled to this call's grid (Python only: TorchScript calls back)."""
    return resample_abs_pos_embed(pos, grid, old_grid, num_prefix_tokens)


@torch.jit.ignore
def _sine_positions(height: int, width: int, dim: int, like: Tensor) -> Tensor:
    """``(h*w, D)`` fixed sine positions in ``like``'s dtype and device."""
    return sine_position_grid(height, width, dim, device=like.device).to(like.dtype)


@torch.jit.ignore
def _window_mask(
    height: int, width: int, window: int, num_prefix_tokens: int, device: Optional[torch.device]
) -> Tensor:
    """The ``attn_window`` mask over ``P + h*w`` tokens (bool True = may not attend)."""
    return with_prefix_tokens(local_window_mask(height, width, window, device=device), num_prefix_tokens)


# Each is one fx call: they depend on the traced grid size.
torch.fx.wrap("_resampled_pos_embed")
torch.fx.wrap("_sine_positions")
torch.fx.wrap("_window_mask")


def _check_vit_args(
    global_pool: str, class_token: bool, pos_embed: str, embed_dim: int, num_heads: int, attn_window: Optional[int]
) -> None:
    """One line per refused combination of :class:`VisionTransformer` arguments."""
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}; got {global_pool!r}")
    if global_pool == "token" and not class_token:
        raise ValueError("global_pool='token' needs class_token=True")
    if pos_embed not in POS_EMBED_KINDS:
        raise ValueError(f"pos_embed must be one of {POS_EMBED_KINDS}; got {pos_embed!r}")
    if embed_dim % num_heads != 0:
        raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
    if attn_window is not None and (not isinstance(attn_window, int) or attn_window < 1 or attn_window % 2 == 0):
        raise ValueError(
            f"attn_window must be None (global) or a positive odd int (k x k patches); got attn_window={attn_window!r}"
        )


def _default_fc_norm(global_pool: str) -> bool:
    return global_pool in ("avg", "max", "avgmax")


class VisionTransformer(PretrainedMixin, nn.Module):
    """ViT: patch embedding, class token, positions, a stack of pre-norm encoder layers, a linear head.

    Args:
        img_size: training image size (int or (H, W)).
        patch_size: patch side (16 for ViT-*/16; 4 for 32-px CIFAR variants).
        in_chans: image channels.
        num_classes: head outputs (0 = no head, ``forward`` returns pooled features).
        global_pool: ``"token"`` (class token), ``"avg"`` / ``"max"`` / ``"avgmax"`` (over patch tokens; the final
            norm then moves after pooling, as timm's ``fc_norm``) or ``""`` (no pooling: the head sees every token).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the transformer's shape.
        init_values: layer-scale initial value (None = off).
        class_token: prepend a class token.
        pos_embed: ``"learned"`` (absolute, trainable, timm's), ``"sine"`` (fixed 2-D sine) or ``"none"``
            (the encoder is then permutation-equivariant over patches).
        dynamic_img_size: accept any image size divisible by the patch (learned positions are resampled on the fly).
        drop_rate: dropout before the head; pos_drop_rate: after adding positions; proj_drop_rate,
            attn_drop_rate: inside the layers; drop_path_rate: stochastic depth, linearly increasing with depth.
        attn_window: None = global attention; an odd k restricts every patch to attend to the k x k patches
            around it (prefix tokens such as the class token still see, and are seen by, every token): the
            receptive field between a CNN's and global attention, on the same model and weights.
        fc_norm: the final norm after pooling (True) or before it (False); None = after it with ``"avg"`` /
            ``"max"`` / ``"avgmax"`` pooling, as timm's.
    """

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: Union[int, Tuple[int, int]] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: Optional[float] = None,
        class_token: bool = True,
        pos_embed: str = "learned",
        dynamic_img_size: bool = False,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        attn_window: Optional[int] = None,
        fc_norm: Optional[bool] = None,
    ) -> None:
        super().__init__()
        _check_vit_args(global_pool, class_token, pos_embed, embed_dim, num_heads, attn_window)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim
        self.grad_checkpointing = False
        self.num_prefix_tokens = 1 if class_token else 0
        self.pos_embed_kind = pos_embed
        self.dynamic_img_size = dynamic_img_size
        self.attn_window = attn_window
        # Fixed or absent positions work at any grid; learned ones are tied to img_size unless dynamic.
        strict = pos_embed == "learned" and not dynamic_img_size
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, strict_img_size=strict)
        self.in_chans = in_chans
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        if pos_embed == "learned":
            n_tokens = self.num_prefix_tokens + self.patch_embed.num_patches
            self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, embed_dim))
        else:
            self.register_parameter("pos_embed", None)
        self.pos_drop = nn.Dropout(pos_drop_rate)
        block_args: Dict[str, Any] = dict(
            qkv_bias=qkv_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, init_values=init_values
        )
        layer = partial(TransformerEncoderLayer, embed_dim, num_heads, mlp_ratio, norm_layer=norm_layer, **block_args)
        # drop path linear in depth, as timm
        self.blocks = nn.Sequential(*[layer(drop_path=drop_path_rate * i / max(1, depth - 1)) for i in range(depth)])
        # timm: with avg pooling the final norm moves after pooling (fc_norm).
        use_fc_norm = _default_fc_norm(global_pool) if fc_norm is None else fc_norm
        self.norm = nn.Identity() if use_fc_norm else norm_layer(embed_dim)
        self.fc_norm = norm_layer(embed_dim) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        # timm's feature metadata: every block gives a (B, D, h, w) map at the patch stride
        self.feature_info = [
            dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=self.patch_embed.patch_size[0])
            for i in range(depth)
        ]
        self._init_weights()

    def _init_weights(self) -> None:
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for blk in self.blocks:
            if isinstance(blk, TransformerEncoderLayer):  # every block is one; narrows the Sequential's Module
                trunc_normal_(blk.attn.in_proj_weight, std=0.02)

    # --- timm-compatible helpers -------------------------------------------------------------
    def no_weight_decay(self) -> Set[str]:
        """Parameter names that AdamW should not decay (besides norms and biases)."""
        return {"pos_embed", "cls_token"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """timm's parameter groups (layer decay, ``timm.optim.param_groups_layer_decay``): the embeddings first, one
        group per block, the final norm with the last block; everything else (``fc_norm``, ``head``) after them."""
        return dict(stem=r"^cls_token|pos_embed|patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (same outputs and
        gradients, less memory; TorchScript ignores it, as timm)."""
        self.grad_checkpointing = enable

    def offline_model_args(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """``args`` that rebuild this model as it is: after ``reset_classifier(n, global_pool)`` the final norm stays
        where it was built, which ``fc_norm`` then says (``save_pretrained`` records ``global_pool`` itself)."""
        fc_norm = not isinstance(self.fc_norm, nn.Identity)
        if fc_norm != _default_fc_norm(args.get("global_pool", self.global_pool)):
            return {**args, "fc_norm": fc_norm}
        return args

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new head of ``num_classes`` outputs (0 = none: ``forward`` returns pooled features ``(B, D)``), and with
        ``global_pool`` another pooling (one of :data:`GLOBAL_POOLS`), as timm's."""
        if global_pool is not None:
            if global_pool not in GLOBAL_POOLS:
                raise ValueError(f"reset_classifier: global_pool must be one of {GLOBAL_POOLS}; got {global_pool!r}")
            if global_pool == "token" and self.cls_token is None:
                raise ValueError("reset_classifier: global_pool='token' needs a class token; this model has none")
            self.global_pool = global_pool
        self.num_classes = num_classes
        if num_classes > 0:
            head = nn.Linear(self.embed_dim, num_classes)
            trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)
            self.head = head
        else:
            self.head = nn.Identity()

    # --- forward -------------------------------------------------------------------------------
    def _add_positions(self, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        """``x (B, h*w, D)`` patch tokens -> ``(B, P + h*w, D)`` with prefix tokens and positions."""
        if self.pos_embed_kind == "sine":
            x = x + _sine_positions(grid[0], grid[1], self.embed_dim, x)
        cls_token = self.cls_token
        if cls_token is not None:
            x = torch.cat([cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        pos = self.pos_embed
        if pos is not None:  # learned; without dynamic_img_size the grid is always patch_embed.grid_size
            if self.dynamic_img_size:
                pos = _resampled_pos_embed(pos, grid, self.patch_embed.grid_size, self.num_prefix_tokens)
            x = x + pos
        return self.pos_drop(x)

    def window_mask(self, grid: Tuple[int, int], device: Optional[torch.device] = None) -> Optional[Tensor]:
        """The ``attn_window`` mask over the ``P + h*w`` tokens of a ``grid = (h, w)`` of patches (bool True = may
        not attend), or None for global attention."""
        window = self.attn_window
        if window is None:
            return None
        return _window_mask(grid[0], grid[1], window, self.num_prefix_tokens, device)

    def _embed(self, x: Tensor, attn_mask: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor], Tuple[int, int]]:
        """Images ``(B, C, H, W)`` -> tokens ``(B, P + h*w, D)`` with positions, the mask the blocks use, the grid."""
        check_image_input(x, self.in_chans, "VisionTransformer")
        pe = self.patch_embed
        check_image_size(x.shape[2], x.shape[3], pe.img_size, pe.patch_size, pe.strict_img_size)
        x = pe.proj(x)  # (B, D, h, w)
        grid = (x.shape[2], x.shape[3])
        window = self.window_mask(grid, x.device)
        if window is not None:
            if attn_mask is None:
                attn_mask = window
            elif attn_mask.dtype == torch.bool:
                attn_mask = attn_mask | window
            else:
                attn_mask = attn_mask.masked_fill(window, float("-inf"))
        return self._add_positions(x.flatten(2).transpose(1, 2), grid), attn_mask, grid

    def forward_features(self, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        """Images ``(B, C, H, W)`` -> normalised tokens ``(B, P + h*w, D)`` (class token first when present).

        ``attn_mask`` (bool True = may not attend) over the ``P + h*w`` tokens restricts attention, e.g.
        :func:`vision_attn.attention.local_window_mask` padded by :func:`~vision_attn.attention.with_prefix_tokens`;
        with ``attn_window`` it is combined with the window mask.
        """
        x, attn_mask, _ = self._embed(x, attn_mask)
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x, attn_mask, use_reentrant=False)
            else:
                x = blk(x, attn_mask=attn_mask)
        return self.norm(x)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: Optional[Union[int, Sequence[int]]] = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        attn_mask: Optional[Tensor] = None,
    ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """timm's feature API: the outputs of chosen blocks, as maps or tokens (timm's semantics and signature).

        Args:
            x: images ``(B, C, H, W)``.
            indices: None = every block; an int n = the last n blocks; a sequence = those blocks (negative from the end).
            return_prefix_tokens: pair each intermediate with its prefix tokens ``(B, P, D)``.
            norm: apply the final norm to each intermediate.
            stop_early: skip the blocks after the last one asked for (the returned features are then that block's).
            output_fmt: ``"NCHW"`` = ``(B, D, h, w)`` maps (prefix tokens dropped), ``"NLC"`` = ``(B, h*w, D)`` tokens.
            intermediates_only: return only the list; otherwise ``(forward_features(x), list)``.
            attn_mask: as :meth:`forward_features`.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC'; got {output_fmt!r}")
        take, last = feature_take_indices(len(self.blocks), _index_list(indices))
        B = x.shape[0]
        x, attn_mask, (h, w) = self._embed(x, attn_mask)
        blocks = self.blocks[: last + 1] if stop_early else self.blocks
        intermediates = []
        for i, blk in enumerate(blocks):
            if self.grad_checkpointing:
                x = checkpoint(blk, x, attn_mask, use_reentrant=False)
            else:
                x = blk(x, attn_mask=attn_mask)
            if i in take:
                intermediates.append(self.norm(x) if norm else x)
        p = self.num_prefix_tokens
        prefix = [y[:, :p] for y in intermediates]
        intermediates = [y[:, p:] for y in intermediates]
        if output_fmt == "NCHW":
            intermediates = [y.reshape(B, h, w, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates]
        if return_prefix_tokens and p:
            intermediates = list(zip(intermediates, prefix))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        """Drop the blocks after the last of ``indices`` (and the norm / head); returns the absolute indices kept.
        timm's feature wrapper calls it so a ``features_only`` model carries no unused weights."""
        take, last = feature_take_indices(len(self.blocks), _index_list(indices))
        self.blocks = self.blocks[: last + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.fc_norm = nn.Identity()
            self.reset_classifier(0)
        return take

    def _pool(self, x: Tensor) -> Tensor:
        """Tokens ``(B, N, D)`` -> ``(B, D)`` as ``global_pool`` says (``""``: unchanged)."""
        if self.global_pool == "token":
            return x[:, 0]
        if self.global_pool == "":
            return x
        x = x[:, self.num_prefix_tokens :]
        if self.global_pool == "avg":
            return x.mean(dim=1)
        if self.global_pool == "max":
            return x.amax(dim=1)
        return 0.5 * (x.amax(dim=1) + x.mean(dim=1))  # avgmax

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Tokens ``(B, N, D)`` -> logits ``(B, num_classes)`` (or pooled features ``(B, D)`` with ``pre_logits``;
        with ``global_pool=""`` the head sees every token: ``(B, N, num_classes)``)."""
        x = self.head_drop(self.fc_norm(self._pool(x)))
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    # --- foreign weights ----------------------------------------------------------------------------
    def checkpoint_filter_fn(
        self, state_dict: Dict[str, Tensor], model: Optional["VisionTransformer"] = None
    ) -> Dict[str, Tensor]:
        """Map a timm ViT state dict (or ours) onto this model, resampling ``pos_embed`` to its grid
        (:func:`~vision_attn.models.weights.vit_state_dict_from_timm`); ``model`` as timm passes it (this one)."""
        return vit_state_dict_from_timm(state_dict, self if model is None else model)

    def export_state_dict(self) -> Dict[str, Tensor]:
        """What ``save_pretrained`` writes: timm's key layout when timm's ViT can express this one (so
        ``timm.create_model("local-dir:...")`` loads the folder), else ours."""
        try:
            return to_timm(self)
        except ValueError:  # sine positions or a local window: no timm counterpart
            return self.state_dict()


def _vit(defaults: dict, **kwargs) -> VisionTransformer:
    args = dict(defaults)
    args.update(kwargs)
    return VisionTransformer(**args)


# Hyper-parameters exactly as timm's models of the same names.
@register_model
def vit_tiny_patch16_224(**kwargs) -> VisionTransformer:
    """ViT-Ti/16 (5.7M params) at 224 px."""
    return _vit(dict(patch_size=16, embed_dim=192, depth=12, num_heads=3), **kwargs)


@register_model
def vit_small_patch16_224(**kwargs) -> VisionTransformer:
    """ViT-S/16 (22M params) at 224 px."""
    return _vit(dict(patch_size=16, embed_dim=384, depth=12, num_heads=6), **kwargs)


@register_model
def vit_base_patch16_224(**kwargs) -> VisionTransformer:
    """ViT-B/16 (86M params) at 224 px."""
    return _vit(dict(patch_size=16, embed_dim=768, depth=12, num_heads=12), **kwargs)


@register_model
def vit_large_patch16_224(**kwargs) -> VisionTransformer:
    """ViT-L/16 (304M params) at 224 px."""
    return _vit(dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16), **kwargs)


# From-scratch CIFAR variants: 32 px images, 4x4 patches (64 tokens), 10 classes by default.
@register_model
def vit_tiny_patch4_32(**kwargs) -> VisionTransformer:
    """ViT-Ti width (192, 3 heads), 12 layers, 4-px patches on 32-px images."""
    return _vit(dict(img_size=32, patch_size=4, num_classes=10, embed_dim=192, depth=12, num_heads=3), **kwargs)


@register_model
def vit_small_patch4_32(**kwargs) -> VisionTransformer:
    """ViT-S width (384, 6 heads), 12 layers, 4-px patches on 32-px images."""
    return _vit(dict(img_size=32, patch_size=4, num_classes=10, embed_dim=384, depth=12, num_heads=6), **kwargs)


@register_model
def vit_nano_patch4_32(**kwargs) -> VisionTransformer:
    """A CPU-sized ViT (0.5M params): width 128, 4 layers, 4 heads, MLP ratio 2, 4-px patches on 32-px images,
    average pooling without a class token (learns faster from little data than class-token pooling)."""
    defaults = dict(
        img_size=32,
        patch_size=4,
        num_classes=10,
        embed_dim=128,
        depth=4,
        num_heads=4,
        mlp_ratio=2.0,
        global_pool="avg",
        class_token=False,
    )
    return _vit(defaults, **kwargs)
