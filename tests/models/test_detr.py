"""DETR model: the same numbers as Hugging Face's DETR for the same weights, official checkpoints loading key by key,
padding that does not leak into predictions, clear errors, attention maps."""

import logging

import pytest
import torch

import vision_attn as va
from vision_attn.models import CheckpointError
from vision_attn.models.detr import DETR

# A tiny DETR: ResNet-18 trunk with frozen batch norm (the official layout), width 32, 2 + 3 layers, 5 queries.
TINY = dict(
    num_classes=7,
    num_queries=5,
    hidden_dim=32,
    nheads=4,
    enc_layers=2,
    dec_layers=3,
    dim_feedforward=64,
    dropout=0.0,
    freeze_bn=True,
    freeze_early_layers=True,
)


def _rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _tiny(**kw) -> DETR:
    args = dict(TINY)
    args.update(kw)
    return va.create_model("detr_resnet18_small", **args).eval()


@pytest.fixture(scope="module")
def hf_detr():
    """A random Hugging Face DETR of the TINY shape, every weight and frozen-BN statistic randomised (no download)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.DetrConfig(
        backbone="resnet18",
        num_queries=5,
        d_model=32,
        encoder_layers=2,
        decoder_layers=3,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        num_labels=7,
        dropout=0.0,
    )
    model = transformers.DetrForObjectDetection(cfg).eval()
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                b.normal_(0, 0.1)
            elif name.endswith(".weight"):
                b.uniform_(0.5, 1.5)
        for name, p in model.named_parameters():
            if "backbone" in name:
                continue
            if p.dim() == 1 and "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif p.dim() == 1:
                p.normal_(0, 0.1)
            elif "query_position" in name:
                p.normal_(0, 1.0)
            else:
                torch.nn.init.xavier_uniform_(p)
    return model


@pytest.fixture(scope="module")
def padded_batch():
    """Two images of different sizes, as a list, and as HF wants them: zero-padded with a pixel mask (1 = real)."""
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(3, 96, 128, generator=g), torch.randn(3, 70, 100, generator=g)]
    pixels = torch.zeros(2, 3, 96, 128)
    pixel_mask = torch.zeros(2, 96, 128, dtype=torch.long)
    for i, im in enumerate(images):
        pixels[i, :, : im.shape[1], : im.shape[2]] = im
        pixel_mask[i, : im.shape[1], : im.shape[2]] = 1
    return images, pixels, pixel_mask


@pytest.fixture(scope="module")
def hf_reference(hf_detr, padded_batch):
    """HF's predictions, and the official DETR's auxiliary predictions from HF's per-layer decoder states (HF's own
    ``auxiliary_loss`` path feeds the normalised state to the next layer, which the official DETR does not)."""
    _, pixels, pixel_mask = padded_batch
    with torch.no_grad():
        out = hf_detr(pixel_values=pixels, pixel_mask=pixel_mask, output_hidden_states=True)
        states = out.decoder_hidden_states[1:-1]  # [0] is the decoder input
        norm = hf_detr.model.decoder.layernorm
        aux = [(hf_detr.class_labels_classifier(norm(h)), hf_detr.bbox_predictor(norm(h)).sigmoid()) for h in states]
    return out.logits, out.pred_boxes, aux


def _assert_matches(out, reference, tol=1e-4):
    logits, boxes, aux = reference
    assert _rel_err(out["pred_logits"], logits) <= tol
    assert _rel_err(out["pred_boxes"], boxes) <= tol
    assert len(out["aux_outputs"]) == len(aux) == TINY["dec_layers"] - 1
    for a, (ref_logits, ref_boxes) in zip(out["aux_outputs"], aux):
        assert _rel_err(a["pred_logits"], ref_logits) <= tol
        assert _rel_err(a["pred_boxes"], ref_boxes) <= tol


# Official facebookresearch/detr names for HF's, from HF's conversion script
# (convert_detr_original_pytorch_checkpoint_to_pytorch.py), written out independently of vision_attn's mapping.
_HF_TO_OFFICIAL_LAYER = {
    "self_attn.o_proj": "self_attn.out_proj",
    "encoder_attn.o_proj": "multihead_attn.out_proj",
    "mlp.fc1": "linear1",
    "mlp.fc2": "linear2",
    "self_attn_layer_norm": "norm1",
    "encoder_attn_layer_norm": "norm2",
}
_HF_TO_OFFICIAL_TOP = {
    "model.input_projection": "input_proj",
    "model.query_position_embeddings": "query_embed",
    "model.decoder.layernorm": "transformer.decoder.norm",
    "class_labels_classifier": "class_embed",
    "bbox_predictor": "bbox_embed",
}


def _official_state_dict(hf_sd):
    out = {}
    qkv = {}
    for k, v in hf_sd.items():
        if k.startswith("model.backbone.model."):
            out["backbone.0.body." + k[len("model.backbone.model.") :]] = v
            continue
        top = next((t for t in _HF_TO_OFFICIAL_TOP if k.startswith(t + ".")), None)
        if top:
            out[_HF_TO_OFFICIAL_TOP[top] + k[len(top) :]] = v
            continue
        assert k.startswith("model.encoder.layers.") or k.startswith("model.decoder.layers."), k
        part, _, idx, rest = k[len("model.") :].split(".", 3)
        prefix = f"transformer.{part}.layers.{idx}."
        for attn in ("self_attn", "encoder_attn"):
            for which in "qkv":
                for kind in ("weight", "bias"):
                    if rest == f"{attn}.{which}_proj.{kind}":
                        name = "self_attn" if attn == "self_attn" else "multihead_attn"
                        qkv.setdefault(f"{prefix}{name}.in_proj_{kind}", {})[which] = v
        if any(
            rest == f"{a}.{w}_proj.{kind}"
            for a in ("self_attn", "encoder_attn")
            for w in "qkv"
            for kind in ("weight", "bias")
        ):
            continue
        if rest.startswith("final_layer_norm."):
            out[prefix + ("norm2" if part == "encoder" else "norm3") + rest[len("final_layer_norm") :]] = v
            continue
        sub = next(s for s in _HF_TO_OFFICIAL_LAYER if rest.startswith(s + "."))
        out[prefix + _HF_TO_OFFICIAL_LAYER[sub] + rest[len(sub) :]] = v
    for k, parts in qkv.items():
        out[k] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


# --- numeric parity --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["transformers5", "transformers4"])
def test_outputs_equal_hugging_face_detr_for_the_same_weights_on_a_padded_batch(
    tmp_path, hf_detr, hf_reference, padded_batch, layout
):
    sd = hf_detr.state_dict()
    if layout == "transformers4":  # the hub files' names (backbone.conv_encoder, out_proj, layers.N.fc1)
        sd = {
            k.replace("model.backbone.model.", "model.backbone.conv_encoder.model.")
            .replace(".o_proj.", ".out_proj.")
            .replace(".mlp.fc", ".fc"): v
            for k, v in sd.items()
        }
    path = tmp_path / "hf.pth"
    torch.save(sd, path)
    ours = _tiny().eval()
    va.load_pretrained(ours, path)
    images, _, _ = padded_batch
    with torch.no_grad():
        _assert_matches(ours(images), hf_reference)


def test_official_checkpoint_loads_by_name_and_reproduces_the_reference(tmp_path, hf_detr, hf_reference, padded_batch):
    official = _official_state_dict(hf_detr.state_dict())
    assert "transformer.encoder.layers.0.self_attn.in_proj_weight" in official
    assert "backbone.0.body.layer1.0.conv1.weight" in official and "backbone.0.body.bn1.running_mean" in official
    path = tmp_path / "detr-official.pth"
    torch.save({"model": official}, path)
    ours = va.create_model("detr_resnet18_small", pretrained=str(path), **TINY).eval()
    images, pixels, pixel_mask = padded_batch
    with torch.no_grad():
        _assert_matches(ours(images), hf_reference)
        _assert_matches(ours(pixels, mask=pixel_mask == 0), hf_reference)


def test_a_tensor_of_the_wrong_shape_is_an_error_naming_the_key(tmp_path, hf_detr):
    official = _official_state_dict(hf_detr.state_dict())
    official["transformer.encoder.layers.1.linear1.weight"] = torch.zeros(65, 32)
    path = tmp_path / "bad.pth"
    torch.save({"model": official}, path)
    with pytest.raises(
        CheckpointError, match=r"transformer\.encoder\.layers\.1\.linear1\.weight.*\(65, 32\).*\(64, 32\)"
    ):
        va.create_model("detr_resnet18_small", pretrained=str(path), **TINY)
    official.pop("transformer.encoder.layers.1.linear1.weight")
    official["transformer.encoder.layers.1.extra.weight"] = torch.zeros(3)
    torch.save({"model": official}, path)
    with pytest.raises(CheckpointError, match=r"transformer\.encoder\.layers\.1\.extra\.weight"):
        va.create_model("detr_resnet18_small", pretrained=str(path), **TINY)


def test_other_num_classes_reinitialises_only_the_class_head_with_a_warning(
    tmp_path, hf_detr, hf_reference, padded_batch, caplog
):
    official = _official_state_dict(hf_detr.state_dict())
    path = tmp_path / "detr-official.pth"
    torch.save({"model": official}, path)
    args = dict(TINY, num_classes=3)
    with caplog.at_level(logging.WARNING):
        ours = va.create_model("detr_resnet18_small", pretrained=str(path), **args).eval()
    assert any("class_embed" in r.getMessage() and "re-initialising" in r.getMessage() for r in caplog.records)
    assert ours.class_embed.weight.shape == (4, 32)
    images, _, _ = padded_batch
    with torch.no_grad():
        out = ours(images)
    assert out["pred_logits"].shape == (2, 5, 4)
    # every other weight was loaded: the boxes do not depend on the class head
    assert _rel_err(out["pred_boxes"], hf_reference[1]) <= 1e-4
    assert torch.equal(ours.bbox_embed.layers[2].weight, official["bbox_embed.layers.2.weight"])


def test_output_dict_shapes_and_contract_attributes():
    model = _tiny()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out["pred_logits"].shape == (2, 5, 8) and out["pred_boxes"].shape == (2, 5, 4)
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    assert [a["pred_boxes"].shape for a in out["aux_outputs"]] == [(2, 5, 4)] * 2
    assert model.num_classes == 7 and model.num_queries == 5
    assert all(n.startswith("backbone.") for n, _ in model.named_parameters() if "body" in n)
    no_aux = _tiny(aux_loss=False)
    with torch.no_grad():
        assert "aux_outputs" not in no_aux(torch.randn(1, 3, 64, 64))


def test_list_input_equals_padded_tensor_with_mask():
    model = _tiny()
    images = [torch.randn(3, 64, 96), torch.randn(3, 90, 50)]
    padded = torch.zeros(2, 3, 90, 96)
    mask = torch.ones(2, 90, 96, dtype=torch.bool)
    for i, im in enumerate(images):
        padded[i, :, : im.shape[1], : im.shape[2]] = im
        mask[i, : im.shape[1], : im.shape[2]] = False
    with torch.no_grad():
        a, b = model(images), model(padded, mask=mask)
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])


class _PatchBackbone(torch.nn.Module):
    """A backbone whose every feature sees only its own 32x32 patch (no receptive field across the padding border)."""

    def __init__(self, num_channels: int):
        super().__init__()
        self.proj = torch.nn.Conv2d(3, num_channels, kernel_size=32, stride=32)
        self.num_channels, self.stride = num_channels, 32

    def forward(self, images, mask):
        features = self.proj(images)
        return features, torch.nn.functional.interpolate(mask[None].float(), size=features.shape[-2:]).bool()[0]


def test_predictions_for_an_image_do_not_depend_on_padding_or_its_batch_neighbour():
    # A CNN's receptive field crosses the padding border (in DETR as in any CNN detector), so the backbone is swapped
    # for a patch-local one: what is checked is that the transformer ignores padded tokens, whatever they hold, and
    # that positions are normalised over each image's real extent.
    model = _tiny()
    model.backbone = _PatchBackbone(model.input_proj.in_channels)
    torch.manual_seed(0)
    image = torch.randn(3, 64, 96)
    batch = torch.randn(2, 3, 160, 128) * 3  # the padding of image 0 holds noise, not zeros
    batch[0, :, :64, :96] = image
    mask = torch.zeros(2, 160, 128, dtype=torch.bool)
    mask[0, 64:] = True
    mask[0, :, 96:] = True
    with torch.no_grad():
        alone = model([image])
        batched = model(batch, mask=mask)
    assert _rel_err(batched["pred_logits"][0], alone["pred_logits"][0]) <= 1e-4
    assert _rel_err(batched["pred_boxes"][0], alone["pred_boxes"][0]) <= 1e-4
    assert _rel_err(batched["aux_outputs"][0]["pred_boxes"][0], alone["aux_outputs"][0]["pred_boxes"][0]) <= 1e-4
    # and the mask matters: without it the noise changes the predictions
    with torch.no_grad():
        unmasked = model(batch)
    assert _rel_err(unmasked["pred_boxes"][0], alone["pred_boxes"][0]) > 1e-2


def test_bad_input_is_a_clear_error():
    model = _tiny()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(2, 1, 64, 64\)"):
        model(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(3, 64, 64\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match=r"images\[1\] has shape \(64, 64\)"):
        model([torch.randn(3, 64, 64), torch.randn(64, 64)])
    with pytest.raises(ValueError, match=r"mask has shape \(2, 32, 32\)"):
        model(torch.randn(2, 3, 64, 64), mask=torch.zeros(2, 32, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="every pixel"):
        model(torch.randn(1, 3, 64, 64), mask=torch.ones(1, 64, 64, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_classes"):
        va.create_model("detr_resnet18_small", num_classes=0)


def test_capture_attention_records_decoder_cross_attention_over_the_feature_grid():
    model = _tiny()
    images = [torch.randn(3, 64, 96), torch.randn(3, 96, 64)]
    with torch.no_grad(), va.capture_attention(model) as maps:
        out = model(images)
    h, w = model.feature_size(96, 96)
    cross = maps["transformer.decoder.layers.2.multihead_attn"]
    assert cross.shape == (2, 4, 5, h * w)
    torch.testing.assert_close(cross.sum(-1), torch.ones(2, 4, 5))
    # the first image is 64 px high: its last feature row (pixels 64..95) is padding and gets no attention
    assert cross[0].view(4, 5, h, w)[:, :, -1].abs().max() == 0
    with torch.no_grad():
        again = model(images)
    assert torch.equal(again["pred_boxes"], out["pred_boxes"])


def test_bf16_autocast_forward_and_backward():
    model = _tiny().train()
    images = [torch.randn(3, 64, 96), torch.randn(3, 96, 64)]
    with torch.no_grad():
        ref = model.eval()(images)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images)
    assert out["pred_logits"].dtype == torch.float32 and out["pred_boxes"].dtype == torch.float32
    assert _rel_err(out["pred_boxes"], ref["pred_boxes"]) < 0.05
    loss = out["pred_logits"].logsumexp(-1).mean() + sum(a["pred_boxes"].sum() for a in out["aux_outputs"])
    loss.backward()
    assert model.query_embed.weight.grad is not None and torch.isfinite(model.query_embed.weight.grad).all()
    assert model.backbone.body.layer4[0].conv1.weight.grad is not None


def test_backbones_dc5_freezing_and_timm():
    # DETR's recipe: frozen batch norm, stem and layer1 frozen; the small from-scratch model trains everything
    big = va.create_model("detr_resnet50", num_queries=10)
    frozen = {n.split(".")[2] for n, p in big.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "layer1"}
    assert big.pretrained_cfg["url"].endswith("detr-r50-e632da11.pth")
    assert va.create_model("detr_resnet50_dc5").feature_size(800, 1066) == (50, 67)
    small = va.create_model("detr_resnet18_small", num_classes=3)
    assert all(p.requires_grad for p in small.parameters())
    assert isinstance(small.backbone.body.bn1, torch.nn.BatchNorm2d)
    timm_model = va.create_model("detr_resnet18_small", backbone="resnet10t", num_classes=3).eval()
    with torch.no_grad():
        out = timm_model([torch.randn(3, 64, 80)])
    assert out["pred_boxes"].shape == (1, 30, 4)
    with pytest.raises(ValueError, match="dilation"):
        va.create_model("detr_resnet18_small", dilation=True)


def test_offline_args_of_a_pretrained_backbone_keep_its_frozen_batch_norm():
    # save_pretrained rebuilds without the ImageNet download but with the batch norm freezing it implied
    det = va.create_model("detr_tiny_prenorm", num_classes=3, freeze_bn=True)
    args = det.offline_model_args({"pretrained_backbone": True, "num_classes": 3})
    assert args == {"num_classes": 3, "pretrained_backbone": False, "freeze_bn": True, "freeze_early_layers": False}


def test_benchmark_times_ours_against_hugging_face_with_the_same_weights():
    pytest.importorskip("transformers")
    from vision_attn.run.bench.detr import detr_implementations
    from vision_attn.run.bench.harness import measure, summarize

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        impls = detr_implementations("inference", 1, (64, 96), torch.device("cpu"), torch.float32, seed=0)
        measure(impls, repeats=1, warmup=0, device=torch.device("cpu"))  # checks both give (1, 100, 92)
    finally:
        torch.set_num_threads(threads)
    rows = summarize(impls)
    assert [r["ours"] for r in rows] == [True, False]
    assert rows[1]["implementation"].startswith("transformers DetrForObjectDetection")
    assert rows[1]["peer_over_ours"] > 0
