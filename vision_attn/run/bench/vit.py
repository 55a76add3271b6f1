"""One ViT-S/16 training step at 224 px (forward, cross-entropy, backward, AdamW step):
``vision_attn.create_model("vit_small_patch16_224")`` vs ``timm.create_model`` of the same name."""

from __future__ import annotations

from typing import List

import torch

import vision_attn

from .harness import Implementation, classifier_train_step


def vit_implementations(
    batch: int, img_size: int, device: torch.device, dtype: torch.dtype, seed: int
) -> List[Implementation]:
    """One ViT-S/16 training step on ``(batch, 3, img_size, img_size)`` images: ours vs timm's, same init seed."""
    import timm

    name = "vit_small_patch16_224"
    bench = f"ViT-S/16 train step (B={batch}, {img_size}px)"
    torch.manual_seed(seed)
    images = torch.randn(batch, 3, img_size, img_size, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    impls = []
    for label, build, ours in [
        (f"vision_attn {name}", lambda: vision_attn.create_model(name, img_size=img_size), True),
        (f"timm {name}", lambda: timm.create_model(name, pretrained=False, img_size=img_size), False),
    ]:
        torch.manual_seed(seed)
        model = build().to(device).train()
        impls.append(
            Implementation(bench, label, classifier_train_step(model, model, images, labels, device, dtype), ours=ours)
        )
    return impls
