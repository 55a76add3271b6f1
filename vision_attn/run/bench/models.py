"""Every registered classifier (or those matching ``--models``): a training step and inference against timm's
model of the same name where timm has one; images/s, peak CUDA memory, and the MFU of our training step (FLOPs
counted by torch's FlopCounterMode)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

import vision_attn

from .harness import Implementation, autocast, classifier_train_step, peak_cell, table


def classifier_names(patterns: Sequence[str]) -> List[str]:
    """Registered classifiers matching any of ``patterns`` (DETR detectors and SA-GAN generators left out), sorted."""
    names = {n for pat in patterns for n in vision_attn.list_models(pat)}
    return sorted(names - set(vision_attn.list_models("detr_*")) - set(vision_attn.list_models("sagan_*")))


def model_input_size(name: str) -> int:
    """The image side a registered classifier is built for: 32 for the CIFAR-sized ones, else 224."""
    return 32 if name.endswith("_32") or "cifar" in name else 224


def model_implementations(
    name: str,
    mode: str,
    batch: int,
    device: torch.device,
    dtype: torch.dtype,
    seed: int,
    compile_models: bool = False,
    channels_last: bool = False,
) -> List[Implementation]:
    """One registered classifier, a training step (forward, cross-entropy, backward, AdamW) or inference (no grad):
    ours vs ``timm.create_model`` of the same name when timm has it (then same init seed), else ours alone."""
    import timm

    size = model_input_size(name)
    bench = f"{name} {mode} (B={batch}, {size}px)"
    torch.manual_seed(seed)
    images = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    builders = [(f"vision_attn {name}", lambda: vision_attn.create_model(name, num_classes=10), True)]
    if timm.list_models(name):
        builders.append((f"timm {name}", lambda: timm.create_model(name, pretrained=False, num_classes=10), False))
    impls = []
    for label, build, ours in builders:
        torch.manual_seed(seed)
        model = build().to(device).train(mode == "train")
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        fwd = torch.compile(model) if compile_models else model
        if mode == "train":
            step = classifier_train_step(model, fwd, images, labels, device, dtype)
        else:

            def step(fwd: nn.Module = fwd) -> Tensor:
                with torch.inference_mode(), autocast(device, dtype):
                    return fwd(images)

        impls.append(Implementation(bench, label, step, ours=ours))
    return impls


def train_step_flops(name: str, batch: int, device: torch.device, dtype: torch.dtype) -> int:
    """FLOPs of one training step of a registered classifier (forward + backward, counted by torch's FlopCounterMode:
    matmuls, convolutions and attention kernels; the optimizer's elementwise work is not counted, as usual for MFU)."""
    from torch.utils.flop_counter import FlopCounterMode

    size = model_input_size(name)
    model = vision_attn.create_model(name, num_classes=10).to(device).train()
    images = torch.randn(batch, 3, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(device, dtype):
            loss = model(images).float().logsumexp(-1).mean()
        loss.backward()
    return int(counter.get_total_flops())


def models_table(
    rows: List[Dict[str, object]],
    names: Sequence[str],
    batch: int,
    device: torch.device,
    dtype: torch.dtype,
    peak_tflops: Optional[float],
) -> str:
    """Per model: train and inference images/s and peak memory, ours and timm's, and MFU of our training step.
    Adds ``images_per_s`` (and ``mfu``) to ``rows``."""
    if peak_tflops is None and device.type == "cuda" and dtype == torch.bfloat16:
        peak_tflops = 989.0  # H100 SXM dense bf16
    columns = [
        ("model", "---"),
        ("mode", "---"),
        ("ours img/s", "---:"),
        ("timm img/s", "---:"),
        ("timm/ours time", "---:"),
        ("ours peak MiB", "---:"),
        ("MFU", "---:"),
    ]
    lines = []
    for name in names:
        for mode in ("train", "inference"):
            group = [r for r in rows if r["benchmark"].startswith(f"{name} {mode} ")]
            if not group:
                continue
            for r in group:
                r["images_per_s"] = batch / r["median_ms"] * 1e3
            ours = next(r for r in group if r["ours"])
            peer = next((r for r in group if not r["ours"]), None)
            mfu = ""
            if mode == "train" and peak_tflops:
                flops = train_step_flops(name, batch, device, dtype)
                ours["train_step_flops"] = flops
                ours["mfu"] = flops / (ours["median_ms"] / 1e3) / (peak_tflops * 1e12)
                mfu = f"{100 * ours['mfu']:.1f}%"
            timm = [f"{peer['images_per_s']:.1f}", f"{peer['peer_over_ours']:.2f}"] if peer else ["-", "-"]
            lines.append([name, mode, f"{ours['images_per_s']:.1f}", *timm, peak_cell(ours), mfu])
    note = f"MFU against {peak_tflops} TFLOP/s" if peak_tflops else "MFU: pass --peak-tflops (default 989 on cuda bf16)"
    return f"per-model images/s (B={batch}); {note}\n" + table(columns, lines)
