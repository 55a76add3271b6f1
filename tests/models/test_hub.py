"""Pretrained weights by name (timm's tags, hf-hub: ids) through an offline Hub cache, save/load/share, class counts."""

import contextlib
import json
import logging
import shutil

import pytest
import timm
import torch
from hub_fixtures import SHA, add_repo, add_timm_repo, offline_hub
from PIL import Image
from safetensors.torch import load_file, save_file

import vision_attn as va
from vision_attn.models import PRETRAINED_CFGS, HubFileNotCachedError, UnknownModelError, class_names
from vision_attn.models.weights import to_timm

DEFAULT_TAGS = {"vit_tiny_patch16_224": "augreg_in21k_ft_in1k", "resnet18": "a1_in1k"}


def _rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture
def fast_gan_init(monkeypatch):
    # SA-GAN's orthogonal init is a QR per weight (seconds on 2 cores); these tests load or compare weights anyway
    monkeypatch.setattr(torch.nn.init, "orthogonal_", lambda tensor, *a, **k: tensor)


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    """A Hub cache holding timm's repos of the two smallest real architectures, with random weights."""
    home = tmp_path_factory.mktemp("hf_home")
    for arch, tag in DEFAULT_TAGS.items():
        add_timm_repo(home / "hub", f"{arch}.{tag}")
    return home


@pytest.fixture
def hub(hf_home, monkeypatch):
    return offline_hub(monkeypatch, hf_home)


@pytest.mark.parametrize("arch", sorted(DEFAULT_TAGS))
def test_timm_names_and_hub_ids_load_the_cached_file_as_timm_does(hub, arch):
    tag = DEFAULT_TAGS[arch]
    ref = timm.create_model(arch, pretrained=True).eval()  # timm reads the same cache offline
    bare = va.create_model(arch, pretrained=True).eval()  # the bare name means timm's default tag
    if arch.startswith("vit"):
        named = va.create_model(f"hf-hub:timm/{arch}.{tag}", pretrained=True).eval()
    else:  # a tag, and a Hub repo's file as the pretrained source (what a config's pretrained: string can say)
        named = va.create_model(f"{arch}.{tag}", pretrained=True).eval()
        with torch.no_grad():
            assert torch.equal(
                va.create_model(arch, pretrained=f"hf-hub:timm/{arch}.{tag}").eval()(torch.ones(1, 3, 64, 64)),
                named(torch.ones(1, 3, 64, 64)),
            )
    assert bare.pretrained_cfg["hf_hub_id"] == timm.models.get_pretrained_cfg(arch).hf_hub_id == f"timm/{arch}.{tag}"
    file = load_file(str(hub / f"models--timm--{arch}.{tag}" / "snapshots" / SHA / "model.safetensors"))
    first = "patch_embed.proj.weight" if arch.startswith("vit") else "conv1.weight"
    assert torch.equal(bare.state_dict()[first], file[first])  # the cached file's weights, not an initialisation
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref(x)
        assert _rel_err(bare(x), expected) <= 1e-5 and _rel_err(named(x), expected) <= 1e-5
    # the eval preprocessing is timm's for these weights
    assert va.resolve_data_config(bare) == timm.data.resolve_model_data_config(ref)


def test_our_tag_table_is_timms(hub):
    """Every tag we name is timm's, with timm's file, head size and preprocessing; the first is timm's default."""
    keys = (
        "hf_hub_id",
        "num_classes",
        "input_size",
        "test_input_size",
        "mean",
        "std",
        "crop_pct",
        "test_crop_pct",
        "interpolation",
        "license",
    )
    for arch, tags in PRETRAINED_CFGS.items():
        if arch.startswith("detr"):
            continue
        assert next(iter(tags)) == timm.models.get_pretrained_cfg(arch).tag, arch
        for tag, cfg in tags.items():
            theirs = timm.models.get_pretrained_cfg(f"{arch}.{tag}").to_dict(remove_null=False)
            assert {k: cfg.get(k) for k in keys} == {k: theirs.get(k) for k in keys}, f"{arch}.{tag}"


def test_every_model_has_a_timm_style_pretrained_cfg_and_list_models_lists_the_weights(fast_gan_init):
    for name in va.list_models():
        gan = name.startswith("sagan")  # spectral norm's power iteration is slow on the meta device: small real GANs
        with contextlib.nullcontext() if gan else torch.device("meta"):
            cfg = va.create_model(name, **({"ch": 8} if gan else {})).pretrained_cfg
        assert cfg["architecture"] == name
        assert {"num_classes", "input_size", "mean", "std", "crop_pct", "interpolation", "license"} <= set(cfg), name
    with_weights = va.list_models(pretrained=True)
    assert va.list_models("vit_tiny*", pretrained=True) == [
        "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
        "vit_tiny_patch16_224.augreg_in21k",
    ]
    assert va.list_models("resnet18", pretrained=True)[0] == "resnet18.a1_in1k"
    assert "detr_resnet50.fb_coco" in with_weights and not any(n.startswith("vit_nano") for n in with_weights)
    det = va.create_model("detr_resnet50", num_queries=10)
    assert det.pretrained_cfg["url"] == "https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth"
    with pytest.raises(UnknownModelError, match="no tag 'in1k'; its tags: a1_in1k, a2_in1k"):
        va.create_model("resnet18.in1k")


def test_offline_without_the_file_is_one_error_line_naming_the_repo_and_the_download(tmp_path, monkeypatch):
    offline_hub(monkeypatch, tmp_path / "empty")
    with pytest.raises(HubFileNotCachedError) as e:
        va.create_model("vit_small_patch16_224", pretrained=True)
    msg = str(e.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE=1" in msg
    assert "`hf download timm/vit_small_patch16_224.augreg_in21k_ft_in1k`" in msg
    with pytest.raises(HubFileNotCachedError, match=r"someone/missing: config\.json .*hf download someone/missing"):
        va.create_model("hf-hub:someone/missing", pretrained=True)


def test_without_a_network_the_cache_is_used_at_once_and_a_missing_file_is_one_line(tmp_path, monkeypatch):
    """No HF_HUB_OFFLINE, but no network (the Hub's host does not resolve): huggingface_hub would retry each file
    for ~25 s; we look in the cache alone, so a cached file loads and a missing one is one line, at once."""
    import socket

    import huggingface_hub

    cache = offline_hub(monkeypatch, tmp_path / "hf")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    calls = []
    real = huggingface_hub.hf_hub_download

    def spy(*args, **kwargs):
        calls.append(kwargs.get("local_files_only", False))
        if not kwargs.get("local_files_only"):
            raise AssertionError("went to the network although the Hub's host does not resolve")
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    with pytest.raises(HubFileNotCachedError) as e:
        va.create_model("vit_small_patch16_224", pretrained=True)
    assert "the Hub (huggingface.co) could not be reached" in str(e.value) and "\n" not in str(e.value)
    assert calls and all(calls)
    add_timm_repo(cache, "vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    model = va.create_model("vit_tiny_patch16_224", pretrained=True)  # cached: loads without the network
    assert model.num_classes == 1000


def test_the_eval_transform_is_timms_for_timm_weights_and_detrs_for_detr():
    with torch.device("meta"):
        ours = va.create_model("resnet50.a1_in1k")
        ref = timm.create_model("resnet50.a1_in1k", pretrained=False)
    theirs = timm.data.create_transform(**timm.data.resolve_model_data_config(ref), is_training=False)
    rgb = Image.fromarray(torch.randint(0, 256, (200, 300, 3), dtype=torch.uint8).numpy())
    out = va.create_eval_transform(ours)(rgb)
    assert out.shape == (3, 224, 224) and torch.equal(out, theirs(rgb))
    assert va.create_eval_transform(ours)(rgb.convert("LA")).shape == (3, 224, 224)  # any mode becomes RGB
    with torch.device("meta"):
        det = va.create_model("detr_resnet50")
    wide = Image.new("RGB", (1000, 500))
    assert va.create_eval_transform(det)(wide).shape == (3, 666, 1332)  # short side 800 unless long > 1333
    assert class_names(det)[1] == "person" and len(class_names(det)) == 91
    assert class_names(ours)[0].startswith("tench")  # ImageNet's names for an ImageNet head


ROUND_TRIP = {
    "vit": ("vit_tiny_patch4_32", dict(depth=1, num_classes=3), lambda m: m(torch.randn(2, 3, 32, 32))),
    "timm_resnet": ("resnet18", dict(num_classes=3), lambda m: m(torch.randn(2, 3, 64, 64))),
    "detr": (
        "detr_tiny_prenorm",
        dict(num_classes=3, enc_layers=1, dec_layers=1, num_queries=4),
        lambda m: m(torch.randn(2, 3, 64, 64))["pred_logits"],
    ),
    "sagan": ("sagan_32", dict(num_classes=3, ch=8), lambda m: m(torch.randn(2, 128), torch.tensor([0, 2]))),
}


@pytest.mark.parametrize("kind", sorted(ROUND_TRIP))
def test_save_pretrained_and_from_pretrained_rebuild_the_model_exactly(tmp_path, kind, fast_gan_init):
    name, args, run = ROUND_TRIP[kind]
    torch.manual_seed(0)
    model = va.create_model(name, **args).eval()
    model.pretrained_cfg["label_names"] = ["cat", "dog", "fish"]
    out = model.save_pretrained(tmp_path / kind)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert (
        config["architecture"] == name
        and config["num_classes"] == 3
        and config["label_names"] == ["cat", "dog", "fish"]
    )
    assert config["model_args"] == {k: v for k, v in {**args, **config["model_args"]}.items()}  # our arguments kept
    loaded = va.from_pretrained(out).eval()
    assert type(loaded) is type(model) and class_names(loaded) == ["cat", "dog", "fish"]
    mine, theirs = model.state_dict(), loaded.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    torch.manual_seed(1)
    with torch.no_grad():
        a = run(model)
        torch.manual_seed(1)
        assert torch.equal(a, run(loaded))


def test_hf_hub_repos_of_our_folders_and_push_to_hub(tmp_path, monkeypatch):
    cache = offline_hub(monkeypatch, tmp_path / "hf")
    model = va.create_model("vit_tiny_patch4_32", depth=1, num_classes=3).eval()
    model.pretrained_cfg["label_names"] = ["a", "b", "c"]
    uploaded = {}

    class FakeApi:  # what push_to_hub does online: create the repo, upload the folder
        def create_repo(self, repo_id, private=None, exist_ok=False):
            uploaded["created"] = (repo_id, exist_ok)

        def upload_folder(self, repo_id, folder_path, revision=None, commit_message=""):
            shutil.copytree(folder_path, tmp_path / "uploaded")
            return "https://huggingface.co/someone/tiny-vit/commit/1"

    monkeypatch.setattr("vision_attn.models.hub._hub_api", lambda token: FakeApi())
    assert model.push_to_hub("someone/tiny-vit").endswith("/commit/1")
    files = {p.name: p for p in (tmp_path / "uploaded").iterdir()}
    assert set(files) == {"config.json", "model.safetensors", "README.md"} and uploaded["created"] == (
        "someone/tiny-vit",
        True,
    )
    assert 'create_model("hf-hub:someone/tiny-vit", pretrained=True)' in files["README.md"].read_text()
    add_repo(cache, "someone/tiny-vit", files)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        for loaded in (
            va.create_model("hf-hub:someone/tiny-vit", pretrained=True),
            va.from_pretrained("someone/tiny-vit"),
        ):
            assert torch.equal(loaded.eval()(x), expected) and class_names(loaded) == ["a", "b", "c"]
    assert va.create_model("hf-hub:someone/tiny-vit", pretrained=True).pretrained_cfg["hf_hub_id"] == "someone/tiny-vit"


def test_a_timm_config_json_maps_to_our_registry_name(hub):
    model = va.create_model("hf-hub:timm/resnet18.a1_in1k", pretrained=False, num_classes=5)
    assert type(model).__name__ == "ResNet" and model.num_classes == 5 and model.pretrained_cfg["crop_pct"] == 0.95
    assert class_names(model) is None and model.pretrained_cfg["label_names_source"] is None  # a new head
    assert class_names(va.create_model("hf-hub:timm/resnet18.a1_in1k"))[0].startswith("tench")


def test_to_timm_writes_weights_timms_vit_loads_strictly_with_the_same_outputs():
    torch.manual_seed(0)
    ours = va.create_model("vit_nano_patch4_32", depth=2).eval()  # no class token, average pooling
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ref = timm.models.VisionTransformer(
        img_size=32,
        patch_size=4,
        embed_dim=128,
        depth=2,
        num_heads=4,
        mlp_ratio=2.0,
        num_classes=10,
        global_pool="avg",
        class_token=False,
    ).eval()
    ref.load_state_dict(to_timm(ours), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _rel_err(ours(x), ref(x)) <= 1e-5
    with pytest.raises(ValueError, match="sine positions"):
        to_timm(va.create_model("vit_nano_patch4_32", depth=1, pos_embed="sine"))
    # timm's fc_norm: the final norm before average pooling, as a model built with "token" and reset to "avg" has it
    ours = va.create_model("vit_nano_patch4_32", depth=1, fc_norm=False).eval()
    assert isinstance(ours.fc_norm, torch.nn.Identity) and isinstance(ours.norm, torch.nn.LayerNorm)
    ref = timm.models.VisionTransformer(
        img_size=32, patch_size=4, embed_dim=128, depth=1, num_heads=4, mlp_ratio=2.0, num_classes=10,
        global_pool="avg", class_token=False, fc_norm=False,
    ).eval()  # fmt: skip
    ref.load_state_dict(to_timm(ours), strict=True)
    with torch.no_grad():
        assert _rel_err(ours(x), ref(x)) <= 1e-5


@pytest.mark.parametrize(
    "arch, args, pool",
    [
        ("vit_tiny_patch4_32", dict(depth=1), "avg"),  # class token -> mean of the patches; the norm stays before
        ("vit_tiny_patch4_32", dict(depth=1, global_pool="avg"), "token"),  # and the other way
        ("vit_tiny_patch4_32", dict(depth=1), ""),
        ("resnet10_narrow_cifar", {}, "max"),
        ("sasa_resnet26_cifar", dict(channels=(16, 16, 16, 16), layers=(1, 1, 1, 1)), ""),
    ],
)
def test_save_pretrained_keeps_the_pooling_reset_classifier_chose(tmp_path, arch, args, pool):
    """timm's ``reset_classifier(n, global_pool)``: the folder rebuilds that model, not the one first created."""
    torch.manual_seed(0)
    model = va.create_model(arch, **args).eval()
    model.reset_classifier(4 if pool else 0, pool)
    again = va.from_pretrained(model.save_pretrained(tmp_path / "m")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert json.loads((tmp_path / "m" / "config.json").read_text())["global_pool"] == pool


CLASS_COUNT = {
    "vit": ("vit_nano_patch4_32", dict(depth=1), 3),
    "vit_headless": ("vit_nano_patch4_32", dict(depth=1), 0),
    "resnet": ("resnet10_narrow_cifar", {}, 3),
    "detr": ("detr_tiny_prenorm", dict(enc_layers=1, dec_layers=1, num_queries=4), 3),
    "sagan": ("sagan_32", dict(ch=8), 3),
}


@pytest.mark.parametrize("kind", sorted(CLASS_COUNT))
def test_a_checkpoint_without_num_classes_builds_its_own_head(tmp_path, kind, caplog, fast_gan_init):
    name, args, n = CLASS_COUNT[kind]
    src = va.create_model(name, num_classes=n, **args)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    with caplog.at_level(logging.WARNING):
        loaded = va.create_model(name, pretrained=str(path), **args)
    assert loaded.num_classes == n and "re-initialising" not in caplog.text
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in src.state_dict().items())


def test_our_checkpoints_carry_num_classes_and_class_names_and_an_explicit_other_count_warns(tmp_path, caplog):
    src = va.create_model("vit_nano_patch4_32", depth=1, num_classes=3)
    path = tmp_path / "run.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in src.state_dict().items()},
            "num_classes": 3,
            "class_names": ["circle", "square", "star"],
        },
        path,
    )
    for loaded in (
        va.create_model("vit_nano_patch4_32", pretrained=str(path), depth=1),
        va.create_model("vit_nano_patch4_32", checkpoint_path=str(path), depth=1),
    ):  # timm's spelling
        assert loaded.num_classes == 3 and class_names(loaded) == ["circle", "square", "star"]
    with caplog.at_level(logging.WARNING):
        other = va.create_model("vit_nano_patch4_32", pretrained=str(path), depth=1, num_classes=5)
    assert "re-initialising" in caplog.text and other.num_classes == 5 and class_names(other) is None
