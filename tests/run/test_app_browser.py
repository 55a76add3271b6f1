"""End to end: ``python tools/app.py`` on a free local port, driven by headless Debian Chromium (playwright with
``/usr/bin/chromium``, nothing downloaded): upload an image, click two patches, the overlay changes and is not blank,
the Detect tab draws boxes and a clicked box's attention, CNN vs attention draws the conv's heads, a tab without its
model says how to get one, the page asks nothing from the web, SIGTERM stops the app.

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
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)"
)


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
    torch.save(
        create_model("detr_tiny_prenorm", num_classes=4, **detr_args).state_dict(), run / "checkpoints" / "best.ckpt"
    )
    return ["--config", str(vit), "--run", str(run.parent), "--threshold", "0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_served(app, url: str, log: Path, timeout: float = 300) -> None:
    """Until the app answers ``url`` (~20 s alone; minutes on a loaded machine)."""
    import urllib.request

    end = time.time() + timeout
    while True:
        assert app.poll() is None, "the app exited:\n" + log.read_text()[-3000:]
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except OSError:
            assert time.time() < end, f"the app did not serve its page in {timeout:.0f} s"
            time.sleep(1)


def _src(locator) -> str:
    return locator.get_attribute("src") or ""


def _image(page, src: str) -> np.ndarray:
    """The drawn PNG itself (fetched from the app: no loading spinner in it), as float RGB."""
    from PIL import Image

    body = page.request.get(page.url.rstrip("/") + src if src.startswith("/") else src).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(np.float32)


def _next_src(locator, before: str, timeout: float = 90.0) -> str:
    """The overlay's new image once an event has replaced ``before``."""
    end = time.time() + timeout
    while time.time() < end:
        now = _src(locator)
        if now and now != before:
            return now
        time.sleep(0.2)
    raise AssertionError("the overlay was not redrawn after the event")


def test_app_in_chromium(tmp_path):
    out = Path(os.environ.get("VISION_ATTN_ARTEFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "app.log", "w+")
    app = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tools" / "app.py"),
            *_tiny_models(tmp_path),
            "--runs-root",
            str(tmp_path),
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    outside = []
    try:
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.route(
                "**/*",
                lambda route: (
                    route.continue_()
                    if "127.0.0.1" in route.request.url or route.request.url.startswith(("data:", "blob:"))
                    else (outside.append(route.request.url), route.abort())
                ),
            )
            url = f"http://127.0.0.1:{port}/"
            _wait_served(app, url, tmp_path / "app.log")
            page.goto(url, timeout=120000)
            _classify(page, out)
            _detect(page, out)
            page.get_by_role("tab", name="CNN vs attention").click()
            heads = page.locator("#conv-heads img")
            heads.wait_for(timeout=120000)
            assert _image(page, _src(heads)).std() > 10  # the conv's nine heads, drawn
            page.screenshot(path=str(out / "app_conv.png"))
            page.get_by_role("tab", name="Pixel attention").click()
            page.get_by_text("make demo").first.wait_for(timeout=60000)  # no pixel model: how to get one
            page.screenshot(path=str(out / "app_pixel_missing.png"))
            browser.close()
        print("screenshots:", *sorted(str(p) for p in out.glob("app_*.png")), sep="\n  ")
        assert not outside, f"the page asked the web for {outside[:5]}"
    finally:
        app.send_signal(signal.SIGTERM)
        t0 = time.time()
        try:
            code = app.wait(timeout=60)
        except subprocess.TimeoutExpired:
            app.kill()
            raise AssertionError("the app did not stop within 60 s of SIGTERM") from None
    assert code == 0, f"the app exited with {code} on SIGTERM:\n" + (tmp_path / "app.log").read_text()[-3000:]
    print(f"stopped {time.time() - t0:.1f} s after SIGTERM")
    assert "the explorer stopped" in (tmp_path / "app.log").read_text()


def _classify(page, out: Path) -> None:
    from PIL import Image

    overlay, where = page.locator("#classify-overlay img"), page.locator("#classify-where")
    overlay.wait_for(timeout=120000)  # the bundled sample, drawn at load
    sample = np.asarray(Image.open(ROOT / "vision_attn" / "run" / "app_samples" / "plus.png"))
    Image.fromarray(np.ascontiguousarray(sample[:, ::-1])).save(out / "upload.png")  # an image not bundled
    playwright.expect(where).to_contain_text("query patch (4, 4)", timeout=90000)  # the centre patch at first
    loaded = _src(overlay)
    page.locator("#classify-input input[type=file]").set_input_files(str(out / "upload.png"))
    before = _next_src(overlay, loaded)  # the uploaded image, drawn
    box = overlay.bounding_box()
    overlay.click(position={"x": box["width"] * 0.1, "y": box["height"] * 0.1})
    first = _image(page, _next_src(overlay, before))
    playwright.expect(where).to_contain_text("query patch (0, 0)", timeout=30000)  # 8x8 patches: the top-left one
    page.screenshot(path=str(out / "app_classify_1.png"))
    before = _src(overlay)
    overlay.click(position={"x": box["width"] * 0.85, "y": box["height"] * 0.6})
    second = _image(page, _next_src(overlay, before))
    playwright.expect(where).to_contain_text("query patch (4, 6)", timeout=30000)
    page.screenshot(path=str(out / "app_classify_2.png"))
    assert first.shape == second.shape == (256, 256, 3)
    for img in (first, second):
        assert img.std() > 10, "the overlay is blank"
    assert np.abs(first - second).mean() > 1.0


def _detect(page, out: Path) -> None:
    page.get_by_role("tab", name="Detect").click()
    overlay = page.locator("#detect-overlay img")
    overlay.wait_for(timeout=120000)
    playwright.expect(page.locator("#detect-where")).to_contain_text("10 detections", timeout=60000)  # threshold 0
    before = _src(overlay)
    boxes = _image(page, before)
    assert boxes.std() > 10
    page.screenshot(path=str(out / "app_detect.png"))
    box = overlay.bounding_box()
    overlay.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    attention = _image(page, _next_src(overlay, before))
    playwright.expect(page.locator("#detect-where")).to_contain_text("detection ", timeout=30000)
    assert attention.shape == boxes.shape and np.abs(attention - boxes).mean() > 1.0
    page.screenshot(path=str(out / "app_detect_attention.png"))
