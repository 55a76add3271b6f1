"""``speed --only compiled``: one training step of each family, eager vs ``torch.compile`` (same weights, same process).

The families at CPU-benchmark sizes: a ViT (``vit_small_patch16_224``'s code at ``--compiled-img-size``), a SASA net
(``sasa_resnet26_cifar``), DETR (``detr_tiny_prenorm``: forward, the bench's surrogate loss on its logits and boxes,
backward, AdamW — the matcher and set criterion stay eager in training anyway) and the SA-GAN step
(``GenerationTask.gan_step`` with G and D compiled in place, as ``compile: true`` does). Compilation happens in the
untimed warm-up repeats.
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor

import vision_attn

from .gan import gan_task_args, gan_train_step
from .harness import Implementation, autocast, classifier_train_step

__all__ = ["COMPILED_FAMILIES", "compiled_implementations"]

COMPILED_FAMILIES = ("vit", "sasa", "detr", "gan")


def _classifier(family: str, img_size: int):
    if family == "vit":
        return (
            "vit_small_patch16_224",
            vision_attn.create_model("vit_small_patch16_224", img_size=img_size, num_classes=10),
            img_size,
        )
    return "sasa_resnet26_cifar", vision_attn.create_model("sasa_resnet26_cifar", num_classes=10), 32


def compiled_implementations(
    family: str,
    batch: int,
    img_size: int,
    device: torch.device,
    dtype: torch.dtype,
    seed: int,
    backend: str = "inductor",
    gan_config: str = "configs/sagan_shapes.yaml",
) -> List[Implementation]:
    """Eager and compiled (``ours``) training steps of ``family`` (one of :data:`COMPILED_FAMILIES`)."""
    if family not in COMPILED_FAMILIES:
        raise ValueError(f"family must be one of {COMPILED_FAMILIES}; got {family!r}")
    impls = []
    for compiled in (False, True):
        torch.manual_seed(seed)
        label = f"torch.compile ({backend})" if compiled else "eager"
        if family in ("vit", "sasa"):
            name, model, size = _classifier(family, img_size)
            model = model.to(device).train()
            images = torch.randn(batch, 3, size, size, device=device)
            labels = torch.randint(0, 10, (batch,), device=device)
            fwd = torch.compile(model, backend=backend) if compiled else model
            step = classifier_train_step(model, fwd, images, labels, device, dtype)
            bench = f"{name} train step (B={batch}, {size}px)"
        elif family == "detr":
            model = vision_attn.create_model("detr_tiny_prenorm", num_classes=4).to(device).train()
            images = torch.randn(batch, 3, img_size, img_size, device=device)
            fwd = torch.compile(model, backend=backend) if compiled else model
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

            def step(fwd=fwd, optimizer=optimizer, images=images) -> Tensor:
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, dtype):
                    out = fwd(images)
                    loss = out["pred_logits"].float().logsumexp(-1).mean() + out["pred_boxes"].float().mean()
                loss.backward()
                optimizer.step()
                return out["pred_logits"]

            bench = f"detr_tiny_prenorm train step (B={batch}, {img_size}px)"
        else:
            from vision_attn.tasks import GenerationTask

            init = gan_task_args(gan_config)
            task = (
                GenerationTask(
                    **{**init, "num_classes": 10, "channels_last": False, "compile": backend if compiled else False}
                )
                .to(device)
                .train()
            )
            task.configure_model()
            step, size = gan_train_step(task, batch, device, dtype)
            bench = f"SA-GAN gan_step, {gan_config.rsplit('/', 1)[-1]} widths (B={batch}, {size}px)"
        impls.append(Implementation(bench, label, step, ours=compiled))
    return impls
