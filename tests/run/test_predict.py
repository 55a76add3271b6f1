"""Inference on your own images: tools/predict.py, train.py predict, and the image loader behind both."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vision_attn as va
from vision_attn.data.images import load_rgb
from vision_attn.data.synthetic import SHAPE_CLASSES
from vision_attn.run.cli import load_task
from vision_attn.run.viz.overlays import attention_rollout

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import predict as predict_tool  # noqa: E402
import train as train_tool  # noqa: E402

QUICKSTART = str(REPO / "configs/quickstart.yaml")
DETR_CFG = str(REPO / "configs/detr_shapes.yaml")
TINY_DETR = [
    "--model.init_args.model_args",
    '{"backbone": "test_resnet", "dilation": true, "pre_norm": true, "hidden_dim": 32, '
    '"nheads": 2, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 64, "num_queries": 8}',
]
QUIET = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.accelerator",
    "cpu",
]


def _rgb(h, w, seed):
    """A smooth random RGB image (h, w, 3) uint8: neighbouring pixels alike, as in photos."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(3, max(2, h // 8), max(2, w // 8), generator=g)
    big = torch.nn.functional.interpolate(small[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return (big.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory):
    """A quickstart ViT (vit_nano_patch4_32) fitted for one tiny epoch: (data flags, best.ckpt)."""
    tmp = tmp_path_factory.mktemp("cls")
    data = [
        "--data.init_args.root",
        str(tmp / "data"),
        "--data.init_args.num_train",
        "40",
        "--data.init_args.num_test",
        "20",
        "--data.init_args.val_split",
        "20",
        "--data.init_args.batch_size",
        "20",
    ]
    train_tool.main(
        [
            "fit",
            "--config",
            QUICKSTART,
            *data,
            *QUIET,
            "--trainer.max_epochs",
            "1",
            "--trainer.default_root_dir",
            str(tmp / "run"),
        ]
    )
    return data, tmp / "run" / "version_0" / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    """A tiny DETR fitted one step on synthetic shapes in COCO format (non-contiguous category ids)."""
    tmp = tmp_path_factory.mktemp("det")
    data = [
        "--data.init_args.root",
        str(tmp / "data"),
        "--data.init_args.num_train",
        "4",
        "--data.init_args.num_val",
        "2",
        "--data.init_args.img_size",
        "64",
        "--data.init_args.batch_size",
        "4",
        "--data.init_args.scales",
        "[64]",
        "--data.init_args.val_size",
        "64",
        "--data.init_args.max_size",
        "96",
    ]
    train_tool.main(
        [
            "fit",
            "--config",
            DETR_CFG,
            *TINY_DETR,
            *data,
            *QUIET,
            "--trainer.max_epochs",
            "1",
            "--trainer.default_root_dir",
            str(tmp / "run"),
        ]
    )
    return [*TINY_DETR, *data], tmp / "run" / "version_0" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two readable images of different sizes and two files that cannot be read."""
    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(_rgb(30, 50, 1)).save(d / "a.png")
    Image.fromarray(_rgb(70, 45, 2)).save(d / "b.jpg", quality=95)
    (d / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (d / "truncated.png").write_bytes((d / "a.png").read_bytes()[:60])
    return d


def _read(path):
    return json.loads(Path(path).read_text())


def test_classification_json_is_the_models_softmax_with_the_configs_labels(cls_run, photos, tmp_path):
    data, ckpt = cls_run
    out = tmp_path / "out"
    failed = predict_tool.main(
        [
            "--config",
            QUICKSTART,
            "--ckpt",
            str(ckpt),
            "--input",
            str(photos / "a.png"),
            str(photos / "b.jpg"),
            "--output-dir",
            str(out),
            "--top-k",
            "10",
            *data,
        ]
    )
    assert failed == 0
    records = _read(out / "predictions.json")
    assert [r["file"] for r in records] == [str(photos / "a.png"), str(photos / "b.jpg")]
    task, dm, _ = load_task(QUICKSTART, str(ckpt), data)
    model = task.eval_model.eval()
    for r in records:
        scores = [t["score"] for t in r["top_k"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 10
        assert sum(scores) == pytest.approx(1.0, abs=1e-4)  # every class: the softmax sums to 1
        assert all(t["label"] == SHAPE_CLASSES[t["class_id"]] for t in r["top_k"])
        # the model's own softmax on the datamodule's evaluation transform (resized to the 32-px training size)
        with torch.no_grad():
            probs = model(dm.predict_transform()(load_rgb(r["file"]))[None]).softmax(-1)[0]
        assert {t["class_id"]: t["score"] for t in r["top_k"]} == pytest.approx(
            dict(enumerate(probs.tolist())), abs=2e-6
        )


def test_unreadable_files_are_named_skipped_and_counted_in_the_exit_status(photos, tmp_path, monkeypatch, capsys):
    torch.save(va.create_model("vit_nano_patch4_32").state_dict(), tmp_path / "vit.pth")
    out = tmp_path / "out"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            str(REPO / "tools/predict.py"),
            "--model",
            "vit_nano_patch4_32",
            "--ckpt",
            str(tmp_path / "vit.pth"),
            "--input",
            str(photos),
            str(tmp_path / "missing.jpg"),
            "--output-dir",
            str(out),
            "--top-k",
            "3",
        ],
    )
    with pytest.raises(SystemExit) as exit_:  # the script as `python tools/predict.py ...` runs it
        runpy.run_path(str(REPO / "tools/predict.py"), run_name="__main__")
    assert exit_.value.code == 3  # broken.jpg, truncated.png, missing.jpg
    stderr = capsys.readouterr().err
    records = {Path(r["file"]).name: r for r in _read(out / "predictions.json")}
    assert set(records) == {"a.png", "b.jpg", "broken.jpg", "truncated.png", "missing.jpg"}
    for bad in ("broken.jpg", "truncated.png", "missing.jpg"):
        assert "error" in records[bad] and "top_k" not in records[bad] and bad in stderr
    assert len(records["a.png"]["top_k"]) == 3 and len(records["b.jpg"]["top_k"]) == 3


def test_exif_grayscale_rgba_palette_and_16_bit_images_predict_as_their_rgb_equivalents(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    rgb = _rgb(24, 40, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: "rotate 90 degrees clockwise to display"
    Image.fromarray(rgb).save(d / "exif.png", exif=exif)
    Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_270).save(d / "exif_ref.png")
    gray = rgb[..., 0]
    Image.fromarray(gray).save(d / "gray.png")
    Image.fromarray(np.repeat(gray[..., None], 3, -1)).save(d / "gray_ref.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(d / "deep.png")  # 16-bit of the same values
    alpha = np.tile(np.linspace(0, 255, 40), (24, 1)).round().astype(np.uint8)
    Image.fromarray(np.dstack([rgb, alpha])).save(d / "rgba.png")
    on_white = (rgb * (alpha[..., None] / 255.0) + 255 * (1 - alpha[..., None] / 255.0)).round().astype(np.uint8)
    Image.fromarray(on_white).save(d / "rgba_ref.png")
    palette = Image.fromarray(rgb).quantize(16)
    palette.save(d / "pal.png")
    palette.convert("RGB").save(d / "pal_ref.png")

    assert load_rgb(d / "exif.png").size == (24, 40)  # (width, height) upright
    assert np.abs(np.asarray(load_rgb(d / "rgba.png"), dtype=int) - on_white).max() <= 1
    torch.save(va.create_model("vit_nano_patch4_32").state_dict(), tmp_path / "vit.pth")
    out = tmp_path / "out"
    assert (
        predict_tool.main(
            [
                "--model",
                "vit_nano_patch4_32",
                "--ckpt",
                str(tmp_path / "vit.pth"),
                "--input",
                str(d),
                "--output-dir",
                str(out),
                "--top-k",
                "10",
            ]
        )
        == 0
    )
    top = {
        Path(r["file"]).stem: {t["class_id"]: t["score"] for t in r["top_k"]} for r in _read(out / "predictions.json")
    }
    assert top["exif"] == top["exif_ref"] and top["gray"] == top["gray_ref"] and top["deep"] == top["gray_ref"]
    assert top["rgba"] == pytest.approx(top["rgba_ref"], abs=2e-3) and top["pal"] == top["pal_ref"]
    assert top["exif"] != top["gray"]  # different images do give different scores


def test_detection_json_boxes_in_original_pixels_and_the_datas_category_ids(det_run, photos, tmp_path):
    args, ckpt = det_run
    out = tmp_path / "out"
    assert (
        predict_tool.main(
            [
                "--config",
                DETR_CFG,
                "--ckpt",
                str(ckpt),
                "--input",
                str(photos / "a.png"),
                str(photos / "b.jpg"),
                "--output-dir",
                str(out),
                "--threshold",
                "0",
                *args,
            ]
        )
        == 0
    )
    records = _read(out / "predictions.json")
    task, dm, _ = load_task(DETR_CFG, str(ckpt), args)
    cats = {c: name for c, name in zip(dm.label_to_category_id, dm.classes)}
    assert sorted(cats) != list(range(len(cats)))  # the shapes data has gaps in its ids: labels are not ids
    for r in records:
        w, h = Image.open(r["file"]).size
        assert (r["width"], r["height"]) == (w, h)
        x = dm.predict_transform()(load_rgb(r["file"]))
        assert x.shape[-2:] != (h, w)  # the model saw a resized image
        with torch.no_grad():
            out_ = task.model.eval()(x[None])
        prob, label = out_["pred_logits"][0].softmax(-1)[:, :-1].max(-1)
        cx, cy, bw, bh = out_["pred_boxes"][0].unbind(-1)
        expected = sorted(
            zip(
                prob.tolist(),
                label.tolist(),
                ((cx - bw / 2) * w).tolist(),
                ((cy - bh / 2) * h).tolist(),
                (bw * w).tolist(),
                (bh * h).tolist(),
            ),
            reverse=True,
        )
        assert len(r["detections"]) == len(expected) == 8  # threshold 0: every query
        for d, (score, lab, *box) in zip(r["detections"], expected):
            assert d["score"] == pytest.approx(score, abs=1e-6)
            assert d["bbox"] == pytest.approx(box, abs=0.02)  # [x, y, w, h] in the file's pixels
            assert d["category_id"] == dm.label_to_category_id[lab] and d["label"] == cats[d["category_id"]]
        assert (out / f"{Path(r['file']).stem}_boxes.png").read_bytes()[:4] == b"\x89PNG"


def test_a_detection_does_not_depend_on_the_other_images_of_the_batch(det_run, photos, tmp_path):
    args, ckpt = det_run

    def run(name, *files):
        return predict_tool.main(
            [
                "--config",
                DETR_CFG,
                "--ckpt",
                str(ckpt),
                "--input",
                *map(str, files),
                "--output-dir",
                str(tmp_path / name),
                "--threshold",
                "0",
                *args,
            ]
        )

    run("alone", photos / "a.png")
    run("together", photos / "b.jpg", photos / "a.png")  # another size, default batch size (8)
    alone = _read(tmp_path / "alone" / "predictions.json")
    together = {r["file"]: r for r in _read(tmp_path / "together" / "predictions.json")}
    assert together[str(photos / "a.png")] == alone[0]
    # ... which is not trivial: padding a.png into one batch with b.jpg would change its detections
    task, dm, _ = load_task(DETR_CFG, str(ckpt), args)
    a, b = (dm.predict_transform()(load_rgb(photos / n)) for n in ("a.png", "b.jpg"))
    with torch.no_grad():
        solo, padded = task.model.eval()([a])["pred_boxes"][0], task.model([a, b])["pred_boxes"][0]
    assert (solo - padded).abs().max() > 1e-4


def test_train_py_predict_writes_the_same_json_as_tools_predict(cls_run, det_run, photos, tmp_path):
    for name, config, (args, ckpt), extra in (
        ("cls", QUICKSTART, cls_run, ["--top-k", "5"]),
        ("det", DETR_CFG, det_run, ["--threshold", "0"]),
    ):
        predict_tool.main(
            [
                "--config",
                config,
                "--ckpt",
                str(ckpt),
                "--input",
                str(photos),
                "--output-dir",
                str(tmp_path / name),
                *extra,
                *args,
            ]
        )
        writer = [
            "--trainer.callbacks+=vision_attn.callbacks.predictions.PredictionWriter",
            f"--trainer.callbacks.{extra[0][2:].replace('-', '_')}",
            extra[1],
        ]
        train_tool.main(
            [
                "predict",
                "--config",
                config,
                "--ckpt_path",
                str(ckpt),
                "--data.init_args.predict_root",
                str(photos),
                "--trainer.default_root_dir",
                str(tmp_path / f"{name}_run"),
                *writer,
                *QUIET,
                *args,
            ]
        )
        ours = (tmp_path / name / "predictions.json").read_text()
        # predicting from a run's checkpoint writes into that run, and opens no version_N of its own
        assert (ckpt.parent.parent / "predictions.json").read_text() == ours
        assert not (tmp_path / f"{name}_run").exists()
        assert sum("error" in r for r in json.loads(ours)) == 2  # the two unreadable files, in both


def test_attention_pngs_for_vit_detr_and_pixel_attention(cls_run, det_run, photos, tmp_path):
    data, ckpt = cls_run
    predict_tool.main(
        [
            "--config",
            QUICKSTART,
            "--ckpt",
            str(ckpt),
            "--input",
            str(photos / "a.png"),
            "--output-dir",
            str(tmp_path / "vit"),
            "--attention",
            *data,
        ]
    )
    args, dckpt = det_run
    predict_tool.main(
        [
            "--config",
            DETR_CFG,
            "--ckpt",
            str(dckpt),
            "--input",
            str(photos / "b.jpg"),
            "--output-dir",
            str(tmp_path / "detr"),
            "--attention",
            "--threshold",
            "0",
            *args,
        ]
    )
    predict_tool.main(
        [
            "--config",
            str(REPO / "configs/quickstart_nonlocal.yaml"),
            "--input",
            str(photos / "a.png"),
            "--output-dir",
            str(tmp_path / "nonlocal"),
            "--attention",
            "--query-pixels",
            "4,4",
            "20,10",
            "--data.init_args.root",
            str(tmp_path / "data"),
        ]
    )
    pngs = [tmp_path / "vit" / "a_attention.png", tmp_path / "detr" / "b_attention.png"]
    pngs += sorted((tmp_path / "nonlocal").glob("a_pixel_attention_*.png"))
    assert len(pngs) == 4  # quickstart_nonlocal has two non-local blocks
    assert all(p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 5000 for p in pngs)


def test_attention_rollout_is_the_product_of_head_averaged_attention_plus_identity():
    g = torch.Generator().manual_seed(0)
    layers = [torch.rand(2, 3, 5, 5, generator=g).softmax(-1) for _ in range(3)]
    step = [(w.mean(1) + torch.eye(5)) / 2 for w in layers]  # rows of mean + I sum to 2
    expected = step[2] @ step[1] @ step[0]
    assert torch.allclose(attention_rollout(layers), expected, atol=1e-6)
    assert torch.allclose(attention_rollout(layers).sum(-1), torch.ones(2, 5), atol=1e-6)
