"""timm's loading and config API on our models: headless and n-channel pretrained loading on every tag, timm's
first-conv rule, ``default_cfg`` and the cfg fields timm reads (its ``test_model_default_cfgs``), timm's data helpers,
and ``local-dir:`` folders both ways.

DETR and the SA-GAN are not classifiers: ``num_classes=0`` (DETR needs >= 1 class; the GAN's classes are its
conditioning) and ``in_chans`` (both take RGB only) do not apply to them, nor do the default-cfg checks of a
classifier's pooled features. Their loading is tested in test_detr.py / test_sagan.py.
"""

import functools
from pathlib import Path

import pytest
import timm
import torch
from hub_fixtures import add_timm_repo, offline_hub

import vision_attn as va
from vision_attn.models import PRETRAINED_CFGS, adapt_input_conv, builder
from vision_attn.models.checkpoint import Checkpoint
from vision_attn.models.weights import to_timm

CLASSIFIER_TAGS = [n for n in va.list_models(pretrained=True) if not n.startswith("detr")]


def _one_per_case(names, key):
    """One tag for each distinct loading case (tags that share architecture, head size and input size load alike)."""
    seen = {}
    for n in names:
        arch, tag = n.split(".")
        seen.setdefault(key(arch, PRETRAINED_CFGS[arch][tag]), n)
    return list(seen.values())


LOAD_CASES = _one_per_case(CLASSIFIER_TAGS, lambda arch, cfg: (arch, cfg["num_classes"]))
CFG_CASES = _one_per_case(CLASSIFIER_TAGS, lambda arch, cfg: (arch, cfg["num_classes"], cfg["input_size"]))
REAL = ["resnet18.a1_in1k", "vit_tiny_patch16_224.augreg_in21k_ft_in1k"]  # the smallest real architectures
VARIANTS = [{"num_classes": 0}, {"in_chans": 1}, {"in_chans": 4, "num_classes": 0}]  # the default: test_hub.py


@pytest.mark.parametrize("in_chans", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_adapt_input_conv_is_timms_rule(in_chans, dtype):
    w = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(in_chans)).to(dtype)
    ours = adapt_input_conv(in_chans, w.clone())
    theirs = timm.models.adapt_input_conv(in_chans, w.clone())
    assert ours.shape == (8, in_chans, 5, 5) and ours.dtype == dtype and torch.equal(ours, theirs)
    x = torch.rand(2, 1, 9, 9)  # a gray image as R = G = B: the one-channel conv answers as the RGB one
    if in_chans == 1 and dtype == torch.float32:
        ref = torch.nn.functional.conv2d(x.expand(-1, 3, -1, -1), w)
        assert torch.allclose(torch.nn.functional.conv2d(x, ours), ref, atol=1e-5)
    with pytest.raises(ValueError, match="expected a conv weight"):
        adapt_input_conv(1, torch.ones(3, 3))


@functools.cache
def _timm_meta_state_dict(arch: str, num_classes: int):
    with torch.device("meta"):
        return timm.create_model(arch, pretrained=False, num_classes=num_classes).state_dict()


@pytest.mark.parametrize("variant", VARIANTS, ids=["headless", "gray", "4ch_headless"])
def test_every_tag_loads_as_timm_does_default_headless_and_other_channels(monkeypatch, variant):
    """Each tag's file (timm's key layout and head size, as meta tensors: shapes only) fits the model asked for.
    One tag per architecture and head size: the others load the same shapes."""

    def read(arch, cfg, pretrained, cache_dir):
        return Checkpoint(
            Path(f"{arch}.{cfg['tag']}.safetensors"), dict(_timm_meta_state_dict(arch, cfg["num_classes"]))
        )

    monkeypatch.setattr(builder, "_read_weights", read)
    for name in LOAD_CASES:
        arch, tag = name.split(".")
        with torch.device("meta"):
            model = va.create_model(name, pretrained=True, **variant)
        want = variant.get("num_classes", PRETRAINED_CFGS[arch][tag]["num_classes"])
        assert model.num_classes == want and model.pretrained_cfg["tag"] == tag, name
        conv = model.get_submodule(model.pretrained_cfg["first_conv"])
        assert conv.in_channels == variant.get("in_chans", 3), name
        assert model.pretrained_cfg["input_size"][0] == conv.in_channels


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("hf_home")
    for name in REAL:
        add_timm_repo(home / "hub", name, seed=3)
    return home


@pytest.mark.parametrize("name", REAL)
def test_pretrained_headless_and_n_channel_weights_equal_timms_own_loading(hf_home, monkeypatch, name):
    """The same cached file through timm's create_model and ours: every tensor equal (timm's key layout)."""
    offline_hub(monkeypatch, hf_home)
    for variant in VARIANTS[:2]:
        ours = va.create_model(name, pretrained=True, **variant)
        theirs = timm.create_model(name, pretrained=True, **variant).state_dict()
        mine = to_timm(ours) if name.startswith("vit") else ours.state_dict()
        assert mine.keys() == theirs.keys(), variant
        assert [k for k in mine if not torch.equal(mine[k], theirs[k])] == [], variant
        conv = ours.pretrained_cfg["first_conv"] + ".weight"
        assert mine[conv].shape[1] == variant.get("in_chans", 3)


def _small(name: str) -> dict:
    """Options that keep a classifier's forward cheap without changing its strides or head."""
    if name.startswith("vit"):
        return {"depth": 1}
    if name in ("resnet18", "resnet34", "resnet50"):  # their depth is their name
        return {"channels": (16, 32, 64, 128)}
    if name.startswith(("sasa", "resnet", "nonlocal")):  # widths and depth only: strides and head kept
        return {"layers": (1, 1, 1, 1), "channels": (16, 32, 64, 128)}
    return {}


CLASSIFIERS = [n for n in va.list_models() if not n.startswith(("detr", "sagan"))]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_model_default_cfgs(name):
    """timm's test_model_default_cfgs (+ _non_std for the token models) over our registry."""
    torch.manual_seed(0)
    model = va.create_model(name, **_small(name)).eval()
    cfg = model.default_cfg
    assert cfg is model.pretrained_cfg and model.num_classes >= 0 and model.num_features > 0
    state_dict = model.state_dict()
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        if feats.ndim == 4:  # a CNN: the unpooled grid is the cfg's pool_size
            assert tuple(feats.shape[2:]) == tuple(cfg["pool_size"]) and feats.shape[1] == model.num_features
            flat = va.create_model(name, num_classes=0, global_pool="", **_small(name)).eval()(x)
            assert flat.ndim == 4 and tuple(flat.shape[2:]) == tuple(cfg["pool_size"])
        else:  # tokens (timm's non-std models): no pool_size
            assert cfg["pool_size"] is None and feats.shape[-1] == model.num_features
        assert pre.shape == (1, model.num_features)
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == pre.shape
        assert va.create_model(name, num_classes=0, **_small(name)).eval()(x).shape == (1, model.num_features)
    assert cfg["classifier"] + ".weight" in state_dict
    assert cfg["first_conv"] + ".weight" in state_dict


def test_our_cfg_fields_are_timms_for_every_tag():
    keys = ("pool_size", "first_conv", "classifier", "input_size", "crop_pct", "interpolation", "mean", "std")
    for name in CFG_CASES:
        with torch.device("meta"):
            cfg = va.create_model(name).pretrained_cfg
        theirs = timm.models.get_pretrained_cfg(name).to_dict(remove_null=False)
        assert {k: cfg.get(k) for k in keys} == {k: theirs.get(k) for k in keys}, name


def test_default_cfg_is_pretrained_cfg_and_timms_data_helpers_read_it():
    with torch.device("meta"):
        tv = va.create_model("resnet18.tv_in1k")
    assert tv.default_cfg is tv.pretrained_cfg and tv.default_cfg["interpolation"] == "bilinear"
    assert timm.data.resolve_data_config(model=tv)["crop_pct"] == 0.875  # not timm's default tag's 0.95
    cifar = va.create_model("resnet10_narrow_cifar").eval()
    data = timm.data.resolve_model_data_config(cifar)
    assert data == va.resolve_data_config(cifar) and data["input_size"] == (3, 32, 32) and data["crop_pct"] == 1.0
    tf = timm.data.create_transform(**data)
    from PIL import Image

    assert tf(Image.new("RGB", (50, 40))).shape == (3, 32, 32)
    pooled, applied = timm.layers.apply_test_time_pool(cifar, {"input_size": (3, 64, 64)})
    assert applied  # timm's test-time pooling reads default_cfg's input_size and pool_size
    with torch.no_grad():
        assert pooled(torch.randn(2, 3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet10_narrow_cifar", "vit_nano_patch4_32", "nonlocal_resnet18_cifar"])
def test_features_only_wrappers_carry_the_cfg(name):
    feats = va.create_model(name, features_only=True, **({"depth": 3} if name.startswith("vit") else {}))
    assert feats.default_cfg is feats.pretrained_cfg
    data = timm.data.resolve_data_config(model=feats)
    assert data["input_size"] == (3, 32, 32) and data["crop_pct"] == 1.0  # the 32-px model's, not ImageNet's 224


def test_feature_cls_getter_is_timms_and_others_are_one_line():
    torch.manual_seed(0)
    model = va.create_model("resnet10_narrow_cifar").eval()
    x = torch.randn(2, 3, 32, 32)
    from vision_attn.models.features import feature_extractor

    as_list = feature_extractor(model, "resnet10_narrow_cifar")
    getter = feature_extractor(model, "resnet10_narrow_cifar", feature_cls="getter")
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(as_list(x), getter(x)))
    assert getter.feature_info.channels() == as_list.feature_info.channels()
    vit = va.create_model("vit_nano_patch4_32", depth=2, features_only=True, feature_cls="getter", out_indices=2)
    assert len(vit(x)) == 2
    with pytest.raises(ValueError, match=r"feature_cls='hook'; expected one of \('getter', 'list'\)"):
        va.create_model("resnet10_narrow_cifar", features_only=True, feature_cls="hook")


@pytest.mark.parametrize(
    "name, args, size",
    [
        (
            "resnet18",
            {"num_classes": 3, "channels": [16, 32, 64, 128]},
            64,
        ),  # timm's resnet18 factory takes channels too
        ("vit_tiny_patch16_224", {"num_classes": 3, "depth": 1, "img_size": 32}, 32),
    ],
)
def test_local_dir_folders_load_both_ways(tmp_path, name, args, size):
    torch.manual_seed(0)
    ours = va.create_model(name, **args).eval()
    ours.save_pretrained(tmp_path / "ours")
    theirs = timm.create_model(f"local-dir:{tmp_path / 'ours'}", pretrained=True).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(theirs(x), ours(x), atol=1e-5)
    timm.models.save_for_hf(theirs, str(tmp_path / "timm"), safe_serialization=True)
    for back in (
        va.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True),
        va.from_pretrained(tmp_path / "timm"),
    ):
        with torch.no_grad():
            assert torch.allclose(back.eval()(x), ours(x), atol=1e-5)
        assert back.pretrained_cfg["source"] == "local-dir" and back.num_classes == 3
