"""DETR on our attention backbones: any registered model with the feature API is a detector's trunk."""

import pytest
import torch

import vision_attn as va
from vision_attn.models.detr import batch_images


def test_detr_trains_end_to_end_on_a_vit_backbone():
    """A whole detector on the one attention core: gradients reach the ViT's patch embedding and last block,
    and images whose sides are not multiples of the patch are padded (and masked) inside."""
    torch.manual_seed(0)
    det = va.create_model(
        "detr_tiny_prenorm", num_classes=3, backbone="vit_nano_patch4_32", backbone_kwargs=dict(depth=2)
    )
    assert det.backbone.stride == 4 and det.backbone.num_channels == 128
    out = det([torch.randn(3, 62, 70), torch.randn(3, 48, 40)])
    assert out["pred_logits"].shape == (2, 10, 4) and out["pred_boxes"].shape == (2, 10, 4)
    (out["pred_logits"].logsumexp(-1).mean() + out["pred_boxes"].mean()).backward()
    vit = det.backbone.body.model
    for p in (vit.patch_embed.proj.weight, vit.blocks[-1].attn.in_proj_weight, vit.blocks[-1].mlp.fc2.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_vit_backbone_map_is_the_vits_own_normalised_patch_tokens():
    torch.manual_seed(0)
    det = va.create_model("detr_tiny_prenorm", backbone="vit_nano_patch4_32", backbone_kwargs=dict(depth=2)).eval()
    vit = va.create_model("vit_nano_patch4_32", depth=2, dynamic_img_size=True).eval()
    vit.load_state_dict(det.backbone.body.model.state_dict(), strict=False)  # the backbone is pruned of its head
    x = torch.randn(2, 3, 40, 48)
    feats, small_mask = det.backbone(x, torch.zeros(2, 40, 48, dtype=torch.bool))
    tokens = vit.forward_features(x)  # (B, h*w, D): no prefix token in the nano ViT (its final norm is after pooling)
    torch.testing.assert_close(feats, tokens.transpose(1, 2).reshape(2, 128, 10, 12))
    assert small_mask.shape == (2, 10, 12) and not small_mask.any()


def test_a_vit_backbone_takes_any_image_size_and_masks_padded_patches():
    det = va.create_model("detr_tiny_prenorm", backbone="vit_nano_patch4_32", backbone_kwargs=dict(depth=1))
    x, mask = batch_images([torch.randn(3, 30, 30), torch.randn(3, 20, 18)])  # 30: not a multiple of the patch
    feats, small = det.backbone(x, mask)
    assert feats.shape[-2:] == (8, 8) and small.shape == (2, 8, 8)
    assert not small[0].any() and not small[1, :5, :5].any() and small[1, 5:].all() and small[1, :, 5:].all()


@pytest.mark.parametrize("backbone,stride", [("sasa_resnet26", 32), ("vit_small_patch16_224", 16)])
def test_the_issue_examples_build(backbone, stride):
    det = va.create_model("detr_resnet50", backbone=backbone)
    assert det.backbone.stride == stride


def test_backbone_errors_name_the_backbone():
    with pytest.raises(
        ValueError, match="dilation \\(DC5\\) needs a torchvision or timm ResNet; backbone 'vit_nano_patch4_32'"
    ):
        va.create_model("detr_resnet50", backbone="vit_nano_patch4_32", dilation=True)
    with pytest.raises(ValueError, match="backbone_kwargs apply to the models of vision_attn's registry; 'resnet50'"):
        va.create_model("detr_resnet50", backbone_kwargs=dict(depth=2))
