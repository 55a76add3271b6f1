"""Official facebookresearch/detr and Hugging Face ``DetrForObjectDetection`` weights -> our DETR, key by key.

Our :class:`~vision_attn.models.detr.DETR` keeps the official parameter names, so an official checkpoint needs only
its backbone prefix moved; a Hugging Face one is renamed by the explicit rules below (its q/k/v projections
concatenated into ``in_proj_*``). :func:`detr_checkpoint_filter` picks the layout from the keys and asserts every
shape against the model, naming the checkpoint's own key in each error.
"""

from __future__ import annotations

import re
from typing import Dict

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from .resnet import keep_batch_counters, move_resnet_trunk

__all__ = ["detr_checkpoint_filter", "detr_state_dict_from_official", "detr_state_dict_from_hf"]


def detr_checkpoint_filter(state_dict: Dict[str, Tensor], model: nn.Module) -> Dict[str, Tensor]:
    """Map an official facebookresearch/detr state dict, a Hugging Face ``DetrForObjectDetection`` one, or ours
    onto ``model``, asserting every shape (the class head excepted: ``load_pretrained`` re-initialises it
    with a warning when ``num_classes`` differs)."""
    keys = list(state_dict)
    if any(k.startswith("backbone.0.body.") for k in keys):
        mapped, layout = detr_state_dict_from_official(state_dict), "official DETR"
    elif any(k.startswith("model.backbone.") or k.startswith("class_labels_classifier.") for k in keys):
        mapped, layout = detr_state_dict_from_hf(state_dict), "Hugging Face DETR"
    else:
        mapped, layout = dict(state_dict), "vision_attn DETR"
    origin = getattr(mapped, "origin", {})
    own = model.state_dict()
    head = ("class_embed.weight", "class_embed.bias")
    for k, v in mapped.items():
        src = origin.get(k, k)
        if k not in own:
            raise CheckpointError(
                f"{layout} checkpoint key {src!r} (as {k!r}) has no counterpart in {type(model).__name__}"
            )
        if k not in head and v.shape != own[k].shape:
            raise CheckpointError(
                f"{layout} checkpoint key {src!r} (as {k!r}) has shape {tuple(v.shape)}; "
                f"{type(model).__name__} expects {tuple(own[k].shape)}"
            )
    return dict(keep_batch_counters(mapped, own))


class _MappedStateDict(dict):
    """A mapped state dict that remembers each key's name in the source checkpoint (for error messages)."""

    origin: Dict[str, str]


def detr_state_dict_from_official(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """facebookresearch/detr keys -> ours: ``backbone.0.body.*`` -> ``backbone.body.*``; every other key
    (``transformer.*``, ``class_embed``, ``bbox_embed.layers.N``, ``query_embed``, ``input_proj``) is the same."""
    out = _MappedStateDict()
    out.origin = {}
    for k, v in state_dict.items():
        new = move_resnet_trunk(k, "backbone.0.body.", "backbone.body.")
        if new is None and k.startswith("backbone."):
            raise CheckpointError(
                f"official DETR checkpoint key {k!r}: only backbone.0.body.* is expected under backbone"
            )
        new = k if new is None else new
        out[new] = v
        out.origin[new] = k
    return out


# Hugging Face DetrForObjectDetection -> ours, after the legacy renames below; {L} = encoder|decoder layer.
_HF_RULES = [
    (r"^model\.backbone\.model\.(.+)$", r"backbone.body.\1"),
    (r"^model\.input_projection\.(weight|bias)$", r"input_proj.\1"),
    (r"^model\.query_position_embeddings\.weight$", r"query_embed.weight"),
    (r"^model\.decoder\.layernorm\.(weight|bias)$", r"transformer.decoder.norm.\1"),
    (r"^class_labels_classifier\.(weight|bias)$", r"class_embed.\1"),
    (r"^bbox_predictor\.layers\.(\d+)\.(weight|bias)$", r"bbox_embed.layers.\1.\2"),
    (
        r"^model\.(encoder|decoder)\.layers\.(\d+)\.self_attn\.o_proj\.(weight|bias)$",
        r"transformer.\1.layers.\2.self_attn.out_proj.\3",
    ),
    (
        r"^model\.decoder\.layers\.(\d+)\.encoder_attn\.o_proj\.(weight|bias)$",
        r"transformer.decoder.layers.\1.multihead_attn.out_proj.\2",
    ),
    (
        r"^model\.(encoder|decoder)\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)$",
        r"transformer.\1.layers.\2.norm1.\3",
    ),
    (
        r"^model\.decoder\.layers\.(\d+)\.encoder_attn_layer_norm\.(weight|bias)$",
        r"transformer.decoder.layers.\1.norm2.\2",
    ),
    (r"^model\.encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)$", r"transformer.encoder.layers.\1.norm2.\2"),
    (r"^model\.decoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)$", r"transformer.decoder.layers.\1.norm3.\2"),
    (r"^model\.(encoder|decoder)\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)$", r"transformer.\1.layers.\2.linear1.\3"),
    (r"^model\.(encoder|decoder)\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)$", r"transformer.\1.layers.\2.linear2.\3"),
]
_HF_QKV = re.compile(
    r"^model\.(encoder|decoder)\.layers\.(\d+)\.(self_attn|encoder_attn)\.([qkv])_proj\.(weight|bias)$"
)
# transformers < 5 (and the hub's facebook/detr-* files) named a few modules differently
_HF_LEGACY = [
    (r"^model\.backbone\.conv_encoder\.model\.", "model.backbone.model."),
    (r"\.out_proj\.", ".o_proj."),
    (r"\.layers\.(\d+)\.fc([12])\.", r".layers.\1.mlp.fc\2."),
]


def detr_state_dict_from_hf(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Hugging Face ``DetrForObjectDetection`` keys -> ours: q/k/v projections concatenated into ``in_proj_*``,
    ``o_proj`` -> ``out_proj``, ``encoder_attn`` -> ``multihead_attn``, the layer norms to ``norm1..3``,
    ``model.backbone.model.*`` -> ``backbone.body.*`` (transformers 4's ``conv_encoder`` layout accepted too)."""
    out = _MappedStateDict()
    out.origin = {}
    qkv: Dict[str, Dict[str, Tensor]] = {}
    for k, v in state_dict.items():
        name = k
        for pat, rep in _HF_LEGACY:
            name = re.sub(pat, rep, name)
        if name.endswith("num_batches_tracked"):
            continue
        m = _HF_QKV.match(name)
        if m:
            part, idx, attn, which, kind = m.groups()
            ours = "self_attn" if attn == "self_attn" else "multihead_attn"
            target = f"transformer.{part}.layers.{idx}.{ours}.in_proj_{kind}"
            qkv.setdefault(target, {})[which] = v
            out.origin[target] = k.replace(f"{which}_proj", "{q,k,v}_proj")
            continue
        for pat, rep in _HF_RULES:
            if re.match(pat, name):
                new = re.sub(pat, rep, name)
                break
        else:
            raise CheckpointError(f"Hugging Face DETR checkpoint key {k!r} has no counterpart in vision_attn's DETR")
        out[new] = v
        out.origin[new] = k
    for target, parts in qkv.items():
        if sorted(parts) != ["k", "q", "v"]:
            raise CheckpointError(
                f"Hugging Face DETR checkpoint: {out.origin[target]} lacks {sorted({'q', 'k', 'v'} - set(parts))}"
            )
        out[target] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out
