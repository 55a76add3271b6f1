"""Attention forward + backward at ViT-S/16 shapes: ``vision_attn.MultiHeadAttention`` vs ``torch.nn.MultiheadAttention``
(``need_weights=False``, its SDPA path) vs timm's ``vision_transformer.Attention``."""

from __future__ import annotations

from typing import List

import torch
from torch import nn

import vision_attn

from .harness import Implementation, forward_backward_step


def attention_implementations(batch: int, device: torch.device, dtype: torch.dtype, seed: int) -> List[Implementation]:
    """Attention fwd+bwd on ``(batch, 197, 384)`` tokens, 6 heads: ours vs torch's vs timm's, same init seed."""
    from timm.models.vision_transformer import Attention as TimmAttention

    tokens, dim, heads = 197, 384, 6
    bench = f"attention fwd+bwd (B={batch}, N={tokens}, D={dim}, H={heads})"
    torch.manual_seed(seed)
    x = torch.randn(batch, tokens, dim, device=device, requires_grad=True)
    grad = torch.randn(batch, tokens, dim, device=device)
    modules = {}
    for name, build in [
        ("vision_attn.MultiHeadAttention", lambda: vision_attn.MultiHeadAttention(dim, heads)),
        ("torch.nn.MultiheadAttention", lambda: nn.MultiheadAttention(dim, heads, batch_first=True)),
        ("timm Attention", lambda: TimmAttention(dim, num_heads=heads, qkv_bias=True)),
    ]:
        torch.manual_seed(seed)
        modules[name] = build().to(device).train()
    forwards = {
        "vision_attn.MultiHeadAttention": lambda m, x: m(x),
        "torch.nn.MultiheadAttention": lambda m, x: m(x, x, x, need_weights=False)[0],
        "timm Attention": lambda m, x: m(x),
    }
    step = {name: forward_backward_step(modules[name], forwards[name], x, grad, device, dtype) for name in modules}
    timm_name = f"timm Attention (fused_attn={modules['timm Attention'].fused_attn})"
    return [
        Implementation(bench, "vision_attn.MultiHeadAttention", step["vision_attn.MultiHeadAttention"], ours=True),
        Implementation(bench, "torch.nn.MultiheadAttention", step["torch.nn.MultiheadAttention"]),
        Implementation(bench, timm_name, step["timm Attention"]),
    ]
