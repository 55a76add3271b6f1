"""The attention explorer's computing (``vision_attn.run.app``), without a browser: shapes, the maps equal what
``capture_attention`` records, rollout rows sum to 1, a click moves the one-hot conv heads' peaks, the messages for
missing models and a missing Gradio."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vision_attn import capture_attention, create_model
from vision_attn.run import app as core

ROOT = Path(__file__).resolve().parents[2]


def _to_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255


def _picture(seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    net = create_model("vit_nano_patch4_32", depth=2, embed_dim=32, num_classes=10).eval()
    return core.ExplorerModel("classify", "tiny vit", net, _to_tensor, labels=[f"c{i}" for i in range(10)])


def test_classify_shapes_and_same_maps_as_capture(vit):
    view = core.classify(vit, _picture())
    assert view.grid == (8, 8) and len(view.layers) == 2 and view.layers[0].shape == (4, 64, 64)
    assert len(view.top) == 5 and view.top[0][1] >= view.top[-1][1]
    with capture_attention(vit.model) as maps, torch.no_grad():
        vit.model(_to_tensor(_picture())[None])
    attn, cell = core.patch_attention(view, (13, 30), layer=1, head=2)
    assert cell == (3, 7) and attn.shape == (8, 8)
    torch.testing.assert_close(attn.flatten(), maps["blocks.1.attn"][0, 2, 3 * 8 + 7].float())
    mean, _ = core.patch_attention(view, (13, 30), layer=0, head="mean")
    torch.testing.assert_close(mean.flatten(), maps["blocks.0.attn"][0, :, 3 * 8 + 7].float().mean(0))
    with pytest.raises(ValueError, match="head must be 'mean' or an int in \\[0, 4\\)"):
        core.patch_attention(view, (0, 0), layer=0, head=4)


def test_rollout_rows_sum_to_one_and_follow_the_click(vit):
    view = core.classify(vit, _picture(1))
    torch.testing.assert_close(view.rollout.sum(-1), torch.ones(64))
    assert (view.rollout >= 0).all()
    a, _ = core.patch_attention(view, (0, 0))
    b, _ = core.patch_attention(view, (31, 31))
    assert a.shape == (8, 8) and not torch.allclose(a, b)
    # one block: rollout = (mean over heads + identity) / 2, its rows summing to 1
    one = core.ClassifyView(view.x, view.rgb, view.top, view.layers[:1], view.grid, 0)
    torch.testing.assert_close(one.rollout, (view.layers[0].mean(0) + torch.eye(64)) / 2)


def test_overlay_and_click_mapping():
    rgb = np.zeros((32, 32, 3), np.float32)
    attn = torch.zeros(8, 8)
    attn[2, 5] = 1
    img = core.overlay(rgb, attn, marks=[(0, 0, 4, 4)])
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    hot = np.argwhere(img.sum(-1) >= img.sum(-1).max() - 1)  # the peak: inferno's brightest colour
    assert hot[:, 0].min() >= 2 * 32 and hot[:, 1].min() >= 5 * 32 and hot[:, 1].max() < 6 * 32
    assert tuple(img[0, 0]) == (255, 0, 0)  # the red mark
    assert core.display_to_input((255, 0), (256, 256), (32, 32)) == (0, 31)
    assert core.display_to_input((17, 130), (256, 256), (32, 32)) == (16, 2)


def test_conv_heads_peak_moves_with_the_click():
    layer = core.seeded_conv_attention(0)
    x = core.conv_input(_picture(2, 64))  # area-resized to 32 px: the capture is quadratic in pixels
    assert x.shape == (3, 32, 32)
    weights = core.conv_weights(layer, x)
    offsets = layer.offsets.detach().round().int().tolist()
    for pixel in [(5, 7), (20, 11)]:
        heads = core.conv_heads(weights, (32, 32), 3, pixel)
        assert heads.shape == (9, 32, 32)
        for h, (dy, dx) in enumerate(offsets):
            peak = divmod(int(heads[h].argmax()), 32)
            assert peak == (pixel[0] + dy, pixel[1] + dx), (h, pixel)
            assert float(heads[h].max()) > 0.99


def test_conv_panel_zooms_on_the_query():
    layer = core.seeded_conv_attention(0)
    small = core.conv_input(_picture(2, 64))
    panel = core.conv_panel(layer, core.conv_weights(layer, small), small, (64, 64), (40, 2))  # (20, 1) at 32 px
    # nine 9x6 crops (9x9 clipped at the left edge: x 0..5), 18 px a pixel (shorter side 108), 3x3 with 4 px gaps
    assert panel.shape == (3 * 162 + 8, 3 * 108 + 8, 3) and panel.dtype == np.uint8


def test_conv_heads_same_as_the_viz_function():
    from vision_attn.run.viz.conv_attention import conv_attention_maps

    layer = core.seeded_conv_attention(0)
    x = core.conv_input(_picture(3, 16))
    want = conv_attention_maps(layer, x[None], (0, 15))[:, 1:-1, 1:-1]
    torch.testing.assert_close(core.conv_heads(core.conv_weights(layer, x), (16, 16), 3, (0, 15)), want)


def test_vit_heads_for_the_same_query(vit):
    view = core.classify(vit, _picture())
    heads = core.vit_heads(view, (13, 30), layer=1)
    assert heads.shape == (4, 8, 8)
    torch.testing.assert_close(heads[3], core.patch_attention(view, (13, 30), 1, 3)[0])
    mosaic = core.head_mosaic(view.rgb, heads, cols=4)
    assert mosaic.shape == (96, 4 * 96 + 3 * 4, 3)


@pytest.mark.parametrize(
    "name, kwargs, kernel",
    [
        ("nonlocal_resnet18_cifar", dict(channels=[8, 16, 32, 64], layers=[1, 1, 1, 1], stem_stride=2), None),
        ("sasa_resnet26_cifar", dict(channels=[8, 16, 32, 64], layers=[1, 1, 1, 1], kernel_size=3, num_heads=2), 3),
    ],
)
def test_pixel_attention_same_as_capture(name, kwargs, kernel):
    torch.manual_seed(0)
    m = core.ExplorerModel("pixel", name, create_model(name, num_classes=4, **kwargs).eval(), _to_tensor)
    view = core.pixel_forward(m, _picture(4))
    module = next(iter(view.weights))
    with capture_attention(m.model) as maps, torch.no_grad():
        m.model(_to_tensor(_picture(4))[None])
    (gh, gw), raw = view.grids[module], maps[module][0].float()
    attn, cell, window = core.pixel_attention(view, module, (31, 0))
    q = (31 * gh // 32) * gw  # the bottom-left cell
    assert cell == ((gh - 1) * 32 / gh, 0.0, 32.0, 32 / gw)
    if kernel is None:
        assert window is None
        torch.testing.assert_close(attn.flatten(), raw[:, q].mean(0))
    else:  # local: the window is drawn, clipped to the image; the map is zero outside it
        assert window == ((gh - 2) * 32 / gh, 0.0, 32.0, 2 * 32 / gw)
        assert attn[: gh - 2].abs().sum() == 0 and attn[:, 2:].abs().sum() == 0
        torch.testing.assert_close(attn.sum(), torch.tensor(1.0))


def test_detect_boxes_and_cross_attention_same_as_capture():
    torch.manual_seed(0)
    net = create_model(
        "detr_tiny_prenorm", num_classes=3, hidden_dim=32, dim_feedforward=64, enc_layers=1, dec_layers=2, nheads=4
    ).eval()
    m = core.ExplorerModel("detect", "tiny detr", net, _to_tensor, labels={i: (i, f"k{i}") for i in range(3)})
    view = core.detect(m, _picture(5, 64), threshold=0.0)
    assert len(view.boxes) == 10 and view.feature_hw == (4, 4) and view.scores == sorted(view.scores, reverse=True)
    with capture_attention(net) as maps, torch.no_grad():
        net(_to_tensor(_picture(5, 64))[None])
    raw = maps["transformer.decoder.layers.1.multihead_attn"][0].float()
    torch.testing.assert_close(core.query_attention(view, 0, 1).flatten(), raw[1, view.queries[0]])
    torch.testing.assert_close(core.query_attention(view, 2).flatten(), raw[:, view.queries[2]].mean(0))
    img = core.render_detections(view, 0)
    assert img.shape == (256, 256, 3)


def test_box_at_takes_the_smallest_box_holding_the_click():
    view = core.DetectView(
        torch.zeros(3, 64, 64),
        np.zeros((64, 64, 3)),
        torch.tensor([[0.0, 0, 60, 60], [10, 10, 20, 20], [40, 40, 50, 50]]),
        ["a", "b", "c"],
        [0, 1, 2],
        [0.9, 0.8, 0.7],
        [3, 4, 5],
        torch.zeros(1, 6, 4),
        (2, 2),
    )
    assert core.box_at(view, (15, 15)) == 1
    assert core.box_at(view, (30, 30)) == 0
    assert core.box_at(view, (62, 62)) == 2  # outside every box: the nearest centre


def test_generate_same_as_capture():
    torch.manual_seed(0)
    gan = create_model("sagan_32", num_classes=3, ch=8, g_mults=[2, 2, 1, 1], d_mults=[1, 1, 2, 2]).eval()
    m = core.ExplorerModel("generate", "tiny gan", gan)
    view = core.generate(m, label=2, seed=7)
    assert view.rgb.shape == (32, 32, 3) and view.res == 16
    with capture_attention(gan.sampler) as maps:
        again = gan.sample(1, labels=2, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(view.weights, maps["attention"][0].float())
    np.testing.assert_allclose(view.rgb, core.to_display_rgb(again[0]).numpy())
    attn, cell = core.generator_attention(view, (31, 31))
    assert attn.shape == (8, 8) and cell == (30.0, 30.0, 32.0, 32.0)  # keys pooled 2x
    torch.testing.assert_close(attn.flatten(), view.weights[:, 255].mean(0))
    with pytest.raises(ValueError, match=r"class must be an int in \[0, 3\)"):
        core.generate(m, label=3)


def test_missing_models_say_how_to_get_them(tmp_path):
    models, missing = core.load_explorer([], tmp_path)
    assert models == {} and set(missing) == set(core.KINDS)
    assert "`make demo`" in missing["classify"] and str(tmp_path / "runs/demo/quickstart") in missing["classify"]
    assert "configs/detr_shapes.yaml" in missing["detect"] and "configs/sagan_shapes.yaml" in missing["generate"]
    with pytest.raises(FileNotFoundError, match="has no config.yaml"):
        core.load_model(run=str(tmp_path))


def test_a_default_run_that_cannot_load_leaves_a_message(tmp_path):
    run = tmp_path / "runs" / "detr_shapes" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"")
    (run / "config.yaml").write_text(
        "model:\n  class_path: vision_attn.tasks.DetectionTask\n"
        "  init_args: {model: detr_tiny_prenorm, no_such_option: 1}\n"
    )
    models, missing = core.load_explorer([], tmp_path)
    assert "detect" not in models and "could not be loaded" in missing["detect"]
    assert "configs/detr_shapes.yaml" in missing["detect"]


def test_load_model_from_a_run_folder(tmp_path):
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    cfg["model"]["init_args"]["model_args"] = {"depth": 1, "embed_dim": 32}
    cfg["data"]["init_args"]["root"] = str(tmp_path / "data")
    cfg.update(ckpt_path=None, weights_only=None)  # what fit saves beside the task's keys
    run = tmp_path / "run" / "version_3"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    torch.manual_seed(1)
    net = create_model("vit_nano_patch4_32", depth=1, embed_dim=32, num_classes=10)
    torch.save(net.state_dict(), run / "checkpoints" / "best.ckpt")
    m = core.load_model(run=str(tmp_path / "run"))
    assert m.kind == "classify" and m.name == str(tmp_path / "run")
    torch.testing.assert_close(m.model.state_dict()["head.weight"], net.state_dict()["head.weight"])
    assert core.classify(m, _picture()).x.shape == (3, 32, 32)


def test_sample_images_are_bundled():
    samples = core.sample_images()
    assert len(samples) >= 2 and all(p.suffix == ".png" and p.is_file() for p in samples.values())


def test_missing_gradio_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    spec = importlib.util.spec_from_file_location("app_tool", ROOT / "tools" / "app.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as err:
        tool.main(["--runs-root", "/nonexistent"])
    assert str(err.value) == "error: the explorer needs Gradio: pip install 'vision_attn[app]'"


def test_app_modules_import_without_gradio(monkeypatch):
    import importlib

    import vision_attn.run

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    for name in ("vision_attn.run.app", "vision_attn.run.app_ui"):
        short = name.rsplit(".", 1)[1]
        monkeypatch.setattr(vision_attn.run, short, getattr(vision_attn.run, short, None), raising=False)
        monkeypatch.delitem(sys.modules, name, raising=False)  # both restored afterwards
        assert importlib.import_module(name).__name__ == name


def test_app_benchmark_times_each_tab_against_a_fresh_forward(tmp_path, monkeypatch):
    import argparse
    import csv

    from vision_attn.run.bench.app import app_latency

    monkeypatch.chdir(ROOT)  # the configs/ of the stand-in models
    args = argparse.Namespace(
        runs_root=str(tmp_path), repeats=1, warmup=0, results=str(tmp_path / "results"), json=None, seed=0, threads=None
    )
    rows = app_latency(args)["results"]
    assert torch.is_grad_enabled()  # the benchmark leaves the process as it found it
    tabs = ["Classify", "Detect", "Pixel attention", "Generate", "CNN vs attention"]
    assert [(r["benchmark"], r["ours"]) for r in rows] == [(t, o) for t in tabs for o in (True, False)]
    assert all(r["median_ms"] > 0 for r in rows) and all(r["peer_over_ours"] > 0 for r in rows if not r["ours"])
    (out,) = (tmp_path / "results").glob("app-*.csv")
    written = list(csv.DictReader(out.open()))
    assert len(written) == 10 and {"machine", "date", "commit", "model"} <= set(written[0])
    assert written[0]["model"] == "vit_nano_patch4_32 (initial weights) (VisionTransformer)"  # no run: a stand-in
