"""End to end: ``python tools/app.py`` on a free local port, driven by headless Debian Chromium (playwright with
``/usr/bin/chromium``, nothing downloaded): upload an image, click two patches, the overlay changes and is not blank,
the Detect tab draws boxes and a clicked box's attention, the page asks nothing from the web, SIGTERM stops the app.

Models: a 1-block ViT (``--config``, its initial seeded weights) and a tiny DETR (``--run``: a run folder with a
state dict) built here in seconds. Screenshots go to ``$VISION_ATTN_ARTEFACTS`` (else the test's tmp folder).
"""
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("gradio")
playwright = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)")


def _config(base: str, data_root: Path, model_args: dict, **data) -> dict:
    cfg = yaml.safe_load((ROOT / "configs" / base).read_text())
    cfg["model"]["init_args"]["model_args"] = model_args
    cfg["data"]["init_args"].update(root=str(data_root), **data)
    cfg["trainer"]["default_root_dir"] = str(data_root / "runs")
    return cfg


def _tiny_models(tmp: Path) -> list:
    """``tools/app.py`` arguments for a 1-block ViT config and a tiny DETR run folder (config.yaml + best.ckpt)."""
    from vision_attn import create_model

    vit = tmp / "vit.yaml"
    vit.write_text(yaml.safe_dump(_config("quickstart.yaml", tmp / "data", {"depth": 1, "embed_dim": 32})))
    run = tmp / "detr_run" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    detr_args = {"hidden_dim": 32, "dim_feedforward": 64, "enc_layers": 1, "dec_layers": 1, "nheads": 4}
    cfg = _config("detr_shapes.yaml", tmp / "data", detr_args, num_train=8, num_val=4)
    cfg["ckpt_path"] = None  # as a fit's saved config.yaml has it
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    torch.save(create_model("detr_tiny_prenorm", num_classes=4, **detr_args).state_dict(), run / "checkpoints" / "best.ckpt")
    return ["--config", str(vit), "--run", str(run.parent), "--threshold", "0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _image(locator) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(np.float32)


def _wait_changed(locator, before: np.ndarray, timeout: float = 20.0) -> np.ndarray:
    end = time.time() + timeout
    while time.time() < end:
        now = _image(locator)
        if now.shape != before.shape or np.abs(now - before).mean() > 1.0:
            return now
        time.sleep(0.3)
    raise AssertionError("the overlay did not change after the click")


def test_app_in_chromium(tmp_path):
    out = Path(os.environ.get("VISION_ATTN_ARTEFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "app.log", "w+")
    app = subprocess.Popen([sys.executable, str(ROOT / "tools" / "app.py"), *_tiny_models(tmp_path), "--runs-root",
                            str(tmp_path), "--port", str(port)], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    outside = []
    try:
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.route("**/*", lambda route: route.continue_() if "127.0.0.1" in route.request.url or
                       route.request.url.startswith(("data:", "blob:")) else (outside.append(route.request.url), route.abort()))
            url, end = f"http://127.0.0.1:{port}/", time.time() + 300  # ~20 s alone; minutes on a loaded machine
            while True:
                assert app.poll() is None, "the app exited:\n" + (tmp_path / "app.log").read_text()[-3000:]
                try:
                    page.goto(url, timeout=3000)
                    break
                except playwright.Error:
                    assert time.time() < end, "the app did not serve its page in 300 s"
                    time.sleep(1)
            _classify(page, out)
            _detect(page, out)
            page.get_by_role("tab", name="Pixel attention").click()
            page.get_by_text("make demo").first.wait_for(timeout=10000)  # no pixel model: how to get one
            page.screenshot(path=str(out / "app_pixel_missing.png"))
            browser.close()
        print("screenshots:", *sorted(str(p) for p in out.glob("app_*.png")), sep="\n  ")
        assert not outside, f"the page asked the web for {outside[:5]}"
    finally:
        app.send_signal(signal.SIGTERM)
        t0 = time.time()
        try:
            code = app.wait(timeout=20)
        except subprocess.TimeoutExpired:
            app.kill()
            raise AssertionError("the app did not stop within 20 s of SIGTERM")
    assert code == 0, f"the app exited with {code} on SIGTERM:\n" + (tmp_path / "app.log").read_text()[-3000:]
    assert time.time() - t0 < 10
    assert "the explorer stopped" in (tmp_path / "app.log").read_text()


def _classify(page, out: Path) -> None:
    from PIL import Image

    overlay = page.locator("#classify-overlay img")
    overlay.wait_for(timeout=30000)  # the bundled sample, drawn at load
    sample = np.asarray(Image.open(ROOT / "vision_attn" / "run" / "app_samples" / "plus.png"))
    Image.fromarray(np.ascontiguousarray(sample[:, ::-1])).save(out / "upload.png")  # an image not bundled
    before = _image(overlay)
    page.locator("#classify-input input[type=file]").set_input_files(str(out / "upload.png"))
    first_patch = _wait_changed(overlay, before)
    box = overlay.bounding_box()
    overlay.click(position={"x": box["width"] * 0.1, "y": box["height"] * 0.1})
    first = _wait_changed(overlay, first_patch)
    assert "query patch (0, 0)" in page.locator("#classify-where").inner_text()  # 8x8 patches: the top-left one
    page.screenshot(path=str(out / "app_classify_1.png"))
    overlay.click(position={"x": box["width"] * 0.85, "y": box["height"] * 0.6})
    second = _wait_changed(overlay, first)
    assert "query patch (4, 6)" in page.locator("#classify-where").inner_text()
    page.screenshot(path=str(out / "app_classify_2.png"))
    for img in (first, second):
        assert img.std() > 10, "the overlay is blank"
    assert np.abs(first - second).mean() > 1.0


def _detect(page, out: Path) -> None:
    page.get_by_role("tab", name="Detect").click()
    overlay = page.locator("#detect-overlay img")
    overlay.wait_for(timeout=30000)
    boxes = _image(overlay)
    assert boxes.std() > 10
    page.screenshot(path=str(out / "app_detect.png"))
    box = overlay.bounding_box()
    overlay.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    _wait_changed(overlay, boxes)
    assert "detection" in page.locator("#detect-where").inner_text()
    page.screenshot(path=str(out / "app_detect_attention.png"))
