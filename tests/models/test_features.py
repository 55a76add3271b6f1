"""timm's feature API: features_only / out_indices / feature_info for every backbone, forward_intermediates == timm's."""

import pytest
import timm
import torch
from torch.utils._pytree import tree_leaves

import vision_attn as va

VIT_KW = dict(img_size=64, depth=3)  # vit_small_patch16_224's code and widths, fewer blocks and pixels
SMALL_RESNET = dict(channels=(16, 32, 64, 128), layers=(1, 1, 1, 1))


@pytest.fixture(scope="module")
def timm_vit_small():
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=7, **VIT_KW).eval()
    for p in model.parameters():  # timm zero-initialises some tensors: randomise all so parity is not trivial
        torch.nn.init.normal_(p, std=0.05)
    return model


@pytest.fixture(scope="module")
def our_vit_small(timm_vit_small):
    ours = va.create_model("vit_small_patch16_224", num_classes=7, **VIT_KW).eval()
    ours.load_state_dict(ours.checkpoint_filter_fn(timm_vit_small.state_dict()))
    return ours


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(indices=2, norm=True),
        dict(indices=[0, -1], output_fmt="NLC", return_prefix_tokens=True),
        dict(indices=[1], stop_early=True),
        dict(indices=[0, 2], intermediates_only=True),
    ],
)
def test_vit_forward_intermediates_equals_timms_for_the_same_weights(timm_vit_small, our_vit_small, kwargs):
    ours = our_vit_small
    x = torch.randn(2, 3, 64, 64)
    got, want = (
        tree_leaves(ours.forward_intermediates(x, **kwargs)),
        tree_leaves(timm_vit_small.forward_intermediates(x, **kwargs)),
    )
    assert [t.shape for t in got] == [t.shape for t in want]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_vit_features_only_equals_timms_features_only(tmp_path, timm_vit_small):
    path = tmp_path / "vit.pth"
    torch.save(timm_vit_small.state_dict(), path)
    ours = va.create_model(
        "vit_small_patch16_224", pretrained=path, num_classes=7, features_only=True, out_indices=(0, 2), **VIT_KW
    )
    ref = timm.create_model("vit_small_patch16_224", pretrained=False, features_only=True, out_indices=(0, 2), **VIT_KW)
    ref.model.load_state_dict(timm_vit_small.state_dict(), strict=False)  # pruned: no head, no final norm
    x = torch.randn(2, 3, 64, 64)
    got, want = ours.eval()(x), ref.eval()(x)
    assert [tuple(t.shape) for t in got] == [(2, 384, 4, 4)] * 2
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert ours.feature_info.channels() == ref.feature_info.channels() == [384, 384]
    assert ours.feature_info.reduction() == ref.feature_info.reduction() == [16, 16]
    assert len(ours.model.blocks) == 3 and isinstance(ours.model.head, torch.nn.Identity)


@pytest.mark.parametrize(
    "name,kwargs,size,reductions",
    [
        ("vit_nano_patch4_32", dict(), 32, [4, 4, 4]),
        ("sasa_resnet26_cifar", SMALL_RESNET, 32, [1, 1, 2, 4, 8]),
        ("nonlocal_resnet18_cifar", dict(SMALL_RESNET, stem_stride=2), 32, [2, 2, 4, 8, 16]),
        ("resnet10_narrow_cifar", dict(), 32, [1, 1, 2, 4, 8]),
        ("resnet18", dict(), 64, [2, 4, 8, 16, 32]),
    ],
)
def test_features_only_maps_match_their_feature_info(name, kwargs, size, reductions):
    """The stride a map reports is the stride it has (CIFAR stems included), and its channels are its channels."""
    model = va.create_model(name, features_only=True, **kwargs).eval()
    maps = model(torch.randn(2, 3, size, size))
    info = model.feature_info
    assert info.reduction() == reductions
    assert [tuple(m.shape) for m in maps] == [(2, c, size // r, size // r) for c, r in zip(info.channels(), reductions)]
    assert all({"num_chs", "reduction", "module"} <= set(d) for d in info.get_dicts())


def test_features_only_selects_maps_and_keeps_the_input_check():
    model = va.create_model("sasa_resnet26_cifar", features_only=True, out_indices=(-2, -1), **SMALL_RESNET)
    assert [d["module"] for d in model.feature_info.get_dicts()] == ["layer3", "layer4"]
    assert [m.shape[1] for m in model(torch.randn(1, 3, 32, 32))] == model.feature_info.channels()
    with pytest.raises(ValueError, match="sasa_resnet26_cifar expects 3 input channels"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="out_indices=\\(5,\\) is out of range; it has 5 feature maps"):
        va.create_model("resnet10_narrow_cifar", features_only=True, out_indices=(5,))
    with pytest.raises(ValueError, match="needs features_only=True"):
        va.create_model("resnet10_narrow_cifar", out_indices=(1,))
    with pytest.raises(ValueError, match="'detr_tiny_prenorm' has no feature maps"):
        va.create_model("detr_tiny_prenorm", features_only=True)
