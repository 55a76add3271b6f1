"""DETR-R50 inference and one training step (forward, a loss on the predictions, backward, AdamW) against Hugging
Face ``transformers``' ``DetrForObjectDetection`` holding the same weights (checked to predict the same boxes)."""

from __future__ import annotations

import sys
from typing import Callable, List, Tuple

import torch
from torch import Tensor, nn

import vision_attn

from .harness import Implementation, autocast


def detr_implementations(
    mode: str, batch: int, size: Tuple[int, int], device: torch.device, dtype: torch.dtype, seed: int
) -> List[Implementation]:
    """DETR-R50 on ``(batch, 3, H, W)`` images, ``size = (H, W)``, ours vs Hugging Face's ``DetrForObjectDetection``
    with the same weights (HF's random init mapped onto ours, checked to give the same predictions):
    ``mode="inference"`` (eval, no_grad) or ``"train"`` (forward, a loss on the predictions, backward, AdamW step;
    dropout 0.1 in both, including the attention dropout of the official DETR)."""
    from transformers import DetrConfig, DetrForObjectDetection

    from vision_attn.models.weights import detr_state_dict_from_hf

    train = mode == "train"
    H, W = size
    bench = f"DETR-R50 {'train step' if train else 'inference'} (B={batch}, {H}x{W})"
    torch.manual_seed(seed)
    config = DetrConfig(
        backbone="resnet50", num_labels=91, dropout=0.1, attention_dropout=0.1
    )  # random init, no download
    peer = DetrForObjectDetection(config).to(device)
    ours = vision_attn.create_model("detr_resnet50", aux_loss=False).to(device)  # HF computes no auxiliary heads
    ours.load_state_dict(detr_state_dict_from_hf(peer.state_dict()))
    torch.manual_seed(seed)
    images = torch.randn(batch, 3, H, W, device=device)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # the check in true float32 (cuDNN's default TF32 convs round to 1e-3)
    try:
        with torch.no_grad(), autocast(device, dtype):
            err = (
                (ours.eval()(images)["pred_boxes"] - peer.eval()(pixel_values=images).pred_boxes.float())
                .abs()
                .max()
                .item()
            )
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    if dtype == torch.float32 and err > 1e-3:
        raise RuntimeError(f"{bench}: ours and Hugging Face's DETR disagree by {err:.2e} for the same weights")
    print(f"{bench}: same weights, max |box difference| {err:.1e}", file=sys.stderr, flush=True)

    def make_step(model: nn.Module, forward: Callable[[Tensor], Tuple[Tensor, Tensor]]) -> Callable[[], Tensor]:
        if not train:
            model.eval()

            def infer() -> Tensor:
                with torch.no_grad(), autocast(device, dtype):
                    return forward(images)[0]

            return infer
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4)

        def step() -> Tensor:
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                logits, boxes = forward(images)
                loss = logits.float().logsumexp(-1).mean() + boxes.float().mean()
            loss.backward()
            optimizer.step()
            return logits

        return step

    def ours_forward(x: Tensor) -> Tuple[Tensor, Tensor]:
        out = ours(x)
        return out["pred_logits"], out["pred_boxes"]

    def peer_forward(x: Tensor) -> Tuple[Tensor, Tensor]:
        out = peer(pixel_values=x)
        return out.logits, out.pred_boxes

    # transformers exposes the attention kernel it chose (eager / sdpa) only as this private config field
    peer_name = f"transformers DetrForObjectDetection ({peer.config._attn_implementation})"
    return [
        Implementation(bench, "vision_attn detr_resnet50", make_step(ours, ours_forward), ours=True),
        Implementation(bench, peer_name, make_step(peer, peer_forward)),
    ]
