"""The built docs site in a real browser: every page loads in headless Chromium (Debian's ``/usr/bin/chromium``,
driven by playwright; no browser is downloaded) with no console error, no failed request, no broken internal link
and no missing image. Screenshots of the home page and one model page are kept as artefacts under
``$VISION_ATTN_ARTEFACTS`` (default: the test's tmp folder); their paths are printed.

The site is ``site/`` when it is newer than every source (``make docs`` ran), else it is built there first.
"""

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "site"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SOURCES = ("docs", "mkdocs.yml", "dev", "results", "vision_attn", "CHANGELOG.md")
MODEL_PAGE = "models/vit_tiny_patch16_224/"

pytest.importorskip("playwright", reason="the [docs] extra (playwright) is not installed")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium: apt-get install -y chromium chromium-driver"
)


def _newest_source() -> float:
    times = [0.0]
    for name in SOURCES:
        p = REPO / name
        if p.is_file():
            times.append(p.stat().st_mtime)
        elif p.is_dir():
            times += [f.stat().st_mtime for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    return max(times)


@pytest.fixture(scope="module")
def site() -> Path:
    index = SITE / "index.html"
    if not index.is_file() or index.stat().st_mtime < _newest_source():
        env = dict(os.environ, PYTHONPATH=str(REPO), NO_MKDOCS_2_WARNING="1")
        proc = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-d", str(SITE)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, "mkdocs build --strict failed:\n" + proc.stdout[-3000:] + proc.stderr[-5000:]
    return SITE


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: a free port
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _pages(site: Path) -> list:
    """Every page of the site as a URL path (``guide/predict/``), the home page first."""
    pages = sorted(str(p.parent.relative_to(site)) + "/" for p in site.rglob("index.html"))
    return [p if p != "./" else "" for p in pages]


def _target_exists(site: Path, path: str) -> bool:
    p = site / path.lstrip("/")
    return (p / "index.html").is_file() if path.endswith("/") or p.is_dir() else p.is_file()


def test_every_page_loads_without_errors_broken_links_or_missing_images(site, server, tmp_path):
    from playwright.sync_api import sync_playwright

    pages = _pages(site)
    assert "" in pages and MODEL_PAGE in pages and len(pages) > 30, pages
    artefacts = Path(os.environ.get("VISION_ATTN_ARTEFACTS", tmp_path))
    artefacts.mkdir(parents=True, exist_ok=True)
    problems, host = [], urlparse(server).netloc
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        current = {"url": ""}
        page.on("console", lambda m: m.type == "error" and problems.append(f"{current['url']}: console: {m.text}"))
        page.on("pageerror", lambda e: problems.append(f"{current['url']}: page error: {e}"))
        # leaving a page aborts its in-flight requests (the search index): not a failure; a missing file is a 404 below
        page.on(
            "requestfailed",
            lambda r: (
                r.failure != "net::ERR_ABORTED"
                and problems.append(f"{current['url']}: request failed: {r.url} ({r.failure})")
            ),
        )
        page.on(
            "response", lambda r: r.status >= 400 and problems.append(f"{current['url']}: HTTP {r.status}: {r.url}")
        )
        for path in pages:
            current["url"] = server + path
            response = page.goto(server + path, wait_until="load")
            assert response is not None and response.ok, f"{path}: {response and response.status}"
            broken = page.eval_on_selector_all(
                "img", "els => els.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))"
            )
            problems += [f"{path}: missing image {src}" for src in broken]
            for href in page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)"):
                url = urlparse(urldefrag(href)[0])
                if url.netloc == host and not _target_exists(site, url.path):
                    problems.append(f"{path}: broken link {href}")
            if path in ("", MODEL_PAGE):
                shot = artefacts / ("docs_home.png" if path == "" else "docs_model_page.png")
                page.screenshot(path=str(shot), full_page=False)
                print(f"screenshot: {shot}")
        browser.close()
    assert not problems, "\n".join(sorted(set(problems))[:50])
