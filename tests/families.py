"""Tiny members of the four families for the compile and export tests, with every residual branch awake.

timm zero-initialises each ResNet block's last batch norm and a non-local block starts as the identity
(``gamma = 0``): at init the attention would not reach the output, and a test of it could not fail. ``awake``
randomises those (and the batch-norm statistics) so every attention layer shapes the result.
"""

import torch
from torch import nn

import vision_attn as va

SMALL_RESNET = dict(channels=(16, 32, 64, 128), layers=(1, 1, 1, 1))


def awake(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            if isinstance(m, va.layers.NonLocalBlock2d):
                m.gamma.fill_(0.7)
    return model


def classifier(name: str) -> nn.Module:
    """``vit`` / ``sasa`` / ``nonlocal``: small 32-px members (10 classes)."""
    torch.manual_seed(0)
    if name == "vit":
        return va.create_model("vit_nano_patch4_32", depth=1)
    if name == "sasa":
        return awake(va.create_model("sasa_resnet26_cifar", kernel_size=5, num_heads=4, **SMALL_RESNET))
    if name == "nonlocal":
        return awake(va.create_model("nonlocal_resnet18_cifar", num_heads=2, **SMALL_RESNET))
    raise KeyError(name)


def detr() -> nn.Module:
    """``detr_tiny_prenorm`` with 1 encoder and 2 decoder layers (an auxiliary output kept): fewer ops to trace."""
    torch.manual_seed(0)
    return awake(va.create_model("detr_tiny_prenorm", num_classes=3, enc_layers=1, dec_layers=2))


def padded_batch(sizes=((64, 64), (40, 52)), seed: int = 0):
    """A DETR batch of differently sized images: ``images (B, 3, H, W)``, ``mask (B, H, W)`` True on padding."""
    g = torch.Generator().manual_seed(seed)
    return va.models.detr.batch_images([torch.randn(3, h, w, generator=g) for h, w in sizes])
