"""Models, registry and checkpoint loading: parity with timm and torchvision, safe loading, clear errors."""

import logging
import os
import pickle

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

import vision_attn as va
from vision_attn.models import CheckpointError, UnknownModelError, UnsafeCheckpointError
from vision_attn.models.vit import VisionTransformer


def _rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def timm_vit_tiny():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    # timm initialises the head to zeros; randomise everything so parity is not trivially met
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "bin"])
def test_vit_outputs_equal_timm_for_the_same_weights_at_224(tmp_path, timm_vit_tiny, fmt):
    path = tmp_path / f"vit_tiny.{fmt}"
    if fmt == "safetensors":
        save_file(timm_vit_tiny.state_dict(), str(path))
    else:
        torch.save(timm_vit_tiny.state_dict(), path)
    ours = va.create_model("vit_tiny_patch16_224", pretrained=str(path)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert _rel_err(ours(x), timm_vit_tiny(x)) <= 1e-5
        assert _rel_err(ours.forward_features(x), timm_vit_tiny.forward_features(x)) <= 1e-5


def test_vit_outputs_equal_timm_at_another_size_with_resampled_positions(tmp_path, timm_vit_tiny):
    from timm.models.vision_transformer import checkpoint_filter_fn

    path = tmp_path / "w.pth"
    torch.save(timm_vit_tiny.state_dict(), path)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=96).eval()
    ref.load_state_dict(checkpoint_filter_fn(timm_vit_tiny.state_dict(), ref))
    ours = va.create_model("vit_tiny_patch16_224", pretrained=str(path), img_size=96).eval()
    assert ours.pos_embed.shape == (1, 1 + 36, 192)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert _rel_err(ours(x), ref(x)) <= 1e-5


def test_other_num_classes_reinitialises_only_the_head_with_a_warning(tmp_path, timm_vit_tiny, caplog):
    path = tmp_path / "w.safetensors"
    save_file(timm_vit_tiny.state_dict(), str(path))
    with caplog.at_level(logging.WARNING):
        ours = va.create_model("vit_tiny_patch16_224", pretrained=str(path), num_classes=10).eval()
    assert "re-initialising" in caplog.text and "1000" in caplog.text
    assert ours.head.out_features == 10
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (
            _rel_err(
                ours.forward_head(ours.forward_features(x), pre_logits=True),
                timm_vit_tiny.forward_head(timm_vit_tiny.forward_features(x), pre_logits=True),
            )
            <= 1e-5
        )


@pytest.mark.parametrize(
    "name", ["vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224"]
)
def test_registered_vits_have_timms_exact_architecture(name):
    with torch.device("meta"):
        ours = va.create_model(name)
        ref = timm.create_model(name, pretrained=False)
    ours_shapes = {k: tuple(v.shape) for k, v in ours.checkpoint_filter_fn(ref.state_dict()).items()}
    assert ours_shapes == {k: tuple(v.shape) for k, v in ours.state_dict().items()}


def test_resnets_equal_torchvision_for_the_same_weights(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=7).eval()
    path = tmp_path / "resnet18_tv.pth"
    torch.save(tv.state_dict(), path)
    ours = va.create_model("resnet18", pretrained=str(path), num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert _rel_err(ours(x), tv(x)) <= 1e-5


def test_resnet18_cifar_keeps_32px_resolution_in_the_stem():
    m = va.create_model("resnet18_cifar").eval()
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, torch.nn.Identity)
    with torch.no_grad():
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert m.forward_features(torch.randn(1, 3, 32, 32)).shape[-2:] == (4, 4)


def test_vit_without_positions_is_blind_to_patch_order():
    torch.manual_seed(0)
    kw = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=5, global_pool="avg")
    no_pos = VisionTransformer(pos_embed="none", **kw).eval()
    learned = VisionTransformer(pos_embed="learned", **kw).eval()
    x = torch.randn(2, 3, 16, 16)
    # shuffle the 4x4 grid of 4-px patches
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4).reshape(2, 3, 16, 4, 4)
    perm = torch.randperm(16)
    shuffled = patches[:, :, perm].reshape(2, 3, 4, 4, 4, 4).permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(no_pos(shuffled), no_pos(x), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(learned(shuffled), learned(x), atol=1e-4)


@pytest.mark.parametrize("pos", ["sine", "none"])
def test_fixed_or_no_positions_take_any_size_divisible_by_the_patch(pos):
    m = VisionTransformer(img_size=32, patch_size=4, embed_dim=32, depth=1, num_heads=2, num_classes=3, pos_embed=pos)
    with torch.no_grad():
        assert m(torch.randn(1, 3, 48, 24)).shape == (1, 3)


def test_dynamic_img_size_resamples_learned_positions():
    m = va.create_model("vit_tiny_patch4_32", depth=1, dynamic_img_size=True).eval()
    with torch.no_grad():
        assert m.forward_features(torch.randn(1, 3, 48, 40)).shape == (1, 1 + 12 * 10, 192)


def test_capture_attention_on_a_vit():
    m = va.create_model("vit_tiny_patch4_32", depth=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        with va.capture_attention(m) as maps:
            out = m(x)
    assert torch.equal(out, ref)
    assert sorted(maps) == [f"blocks.{i}.attn" for i in range(3)]
    assert maps["blocks.2.attn"].shape == (2, 3, 65, 65)


def test_wrong_input_gives_errors_saying_what_was_expected():
    vit = va.create_model("vit_tiny_patch4_32", depth=1)
    with pytest.raises(ValueError, match=r"expects 3 input channels .*got 1"):
        vit(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"expected images of 32x32 pixels .*got 40x40"):
        vit(torch.randn(1, 3, 40, 40))
    with pytest.raises(ValueError, match=r"shape \(B, 3, H, W\)"):
        vit(torch.randn(3, 32, 32))
    cnn = va.create_model("resnet18_cifar")
    with pytest.raises(ValueError, match=r"resnet18_cifar expects 3 input channels .*got 4"):
        cnn(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        va.create_model("vit_tiny_patch16_224", img_size=100)


def test_registry_lists_and_suggests_close_names():
    assert va.list_models("vit_*_patch16_224") == [
        "vit_base_patch16_224",
        "vit_large_patch16_224",
        "vit_small_patch16_224",
        "vit_tiny_patch16_224",
    ]
    assert {"resnet18", "resnet34", "resnet50", "resnet18_cifar", "vit_tiny_patch4_32", "vit_small_patch4_32"} <= set(
        va.list_models()
    )
    with pytest.raises(UnknownModelError, match="did you mean vit_small_patch16_224"):
        va.create_model("vit_smal_patch16_224")
    with pytest.raises(TypeError, match=r"takes no option 'depht' \(did you mean depth\?\)"):
        va.create_model("vit_tiny_patch4_32", depht=3)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + _Evil.marker,))


def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    _Evil.marker = str(marker)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": _Evil()}}, f)
    torch.save({"model": {"x": torch.zeros(1)}, "payload": _Evil()}, tmp_path / "evil2.pth")
    for p in (path, tmp_path / "evil2.pth"):
        with pytest.raises(UnsafeCheckpointError, match=f"{p.name}.*refused.*Nothing in it was executed"):
            va.create_model("vit_tiny_patch4_32", depth=1, pretrained=str(p))
    assert not marker.exists()


def test_truncated_foreign_and_missing_files_give_errors_naming_the_file(tmp_path):
    m = va.create_model("vit_tiny_patch4_32", depth=1)
    good = tmp_path / "good.pth"
    torch.save(m.state_dict(), good)
    data = good.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    save_file(m.state_dict(), str(tmp_path / "good.safetensors"))
    st = (tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(st[: len(st) // 2])
    (tmp_path / "notes.pth").write_text('{"not": "a checkpoint"}')
    torch.save({"optimizer": {"lr": 0.1}}, tmp_path / "opt.pth")
    torch.save(va.create_model("resnet18_cifar").state_dict(), tmp_path / "resnet.pth")
    cases = {
        "cut.pth": "truncated or not a PyTorch checkpoint",
        "cut.safetensors": "not a readable safetensors",
        "notes.pth": "not a PyTorch checkpoint",
        "opt.pth": "found no weights",
        "resnet.pth": "does not match VisionTransformer",
        "absent.pth": "does not exist",
    }
    for name, msg in cases.items():
        with pytest.raises(CheckpointError, match=f"{name}.*{msg}|{msg}.*{name}"):
            va.load_pretrained(va.create_model("vit_tiny_patch4_32", depth=1), str(tmp_path / name))
    # nothing the user saved was touched
    assert (tmp_path / "good.pth").read_bytes() == data


def test_lightning_checkpoint_loads_and_prefers_ema_weights(tmp_path):
    torch.manual_seed(0)
    src = va.create_model("vit_tiny_patch4_32", depth=1)
    ema = va.create_model("vit_tiny_patch4_32", depth=1)
    sd = {f"model.{k}": v for k, v in src.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3, "pytorch-lightning_version": "2.6"}, tmp_path / "plain.ckpt")
    sd.update({f"ema.module.{k}": v for k, v in ema.state_dict().items()})
    sd["ema.n_averaged"] = torch.tensor(5)
    torch.save({"state_dict": sd}, tmp_path / "ema.ckpt")
    a = va.create_model("vit_tiny_patch4_32", depth=1, pretrained=str(tmp_path / "plain.ckpt"))
    b = va.create_model("vit_tiny_patch4_32", depth=1, pretrained=str(tmp_path / "ema.ckpt"))
    assert torch.equal(a.pos_embed, src.pos_embed) and torch.equal(b.pos_embed, ema.pos_embed)


def test_training_checkpoints_with_their_args_load_and_pretrained_true_needs_published_weights(tmp_path):
    """DETR-style training checkpoints carry {"model": weights, "args": argparse.Namespace}: they load (the Namespace
    only holds values); pretrained=True means the model's published URL, and a model without one says so."""
    import argparse

    model = va.create_model("vit_nano_patch4_32", num_classes=10)
    path = tmp_path / "train.pth"
    torch.save(
        {"model": model.state_dict(), "args": argparse.Namespace(lr=1e-4, backbone="resnet50"), "epoch": 3}, path
    )
    loaded = va.create_model("vit_nano_patch4_32", num_classes=10, pretrained=str(path))
    assert torch.equal(loaded.pos_embed, model.pos_embed)
    with pytest.raises(ValueError, match="'vit_nano_patch4_32' has no default pretrained weights"):
        va.create_model("vit_nano_patch4_32", pretrained=True)


def test_a_checkpoint_url_without_network_is_one_line_naming_the_url_and_the_way_out(tmp_path, monkeypatch):
    import urllib.error

    from vision_attn.models.checkpoint import CheckpointError, resolve_checkpoint

    def offline(url, dst, **_):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torch.hub.download_url_to_file", offline)
    url = "https://example.invalid/weights/vit.pth"
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint(url, cache_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and url in msg and "name resolution" in msg and str(tmp_path) in msg and "path" in msg
