"""Load every page of the built book in headless Chromium and check what a reader sees.

Run with `make test-browser` (it builds the book first). Per page: every image loaded
with a non-zero size (and chapter pages have figures), no broken internal link or
anchor, no error output cell, the math rendered by MathJax. A full-page screenshot of
each page goes to _build/screenshots/ for people to look at.

The machine is offline, so the pages are served from a copy of _build/html whose
MathJax <script> points at a local copy of the npm registry's `mathjax` package; the
published book keeps the CDN.
"""
from __future__ import annotations

import functools
import http.server
import io
import os
import re
import shutil
import socketserver
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SERVE = ROOT / "_build" / "browser-html"
SHOTS = ROOT / "_build" / "screenshots"
MATHJAX_VERSION = "3.2.2"
CDN = re.compile(r'src="https://cdn\.jsdelivr\.net/npm/mathjax@3/es5/([\w.-]+\.js)"')

REQUIRED = os.environ.get("LNBN_REQUIRE_BROWSER") == "1"
try:
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
except ImportError:  # pragma: no cover
    webdriver = None


def _missing() -> str | None:
    if webdriver is None:
        return "selenium is not installed (pip install -r requirements-browser.txt)"
    for exe in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not Path(exe).exists():
            return f"{exe} is missing (apt-get install chromium chromium-driver)"
    if not (HTML / "index.html").exists():
        return "the book is not built (jupyter-book build .)"
    return None


if _missing():
    if REQUIRED:
        raise RuntimeError(_missing())
    pytest.skip(_missing(), allow_module_level=True)

PAGES = sorted(p.relative_to(HTML).as_posix() for p in (HTML / "book").glob("*.html"))
NOTEBOOK_PAGES = {f"book/{p.stem}.html" for p in (ROOT / "book").glob("*.ipynb")}


def _local_mathjax() -> Path:
    """The npm package `mathjax`, installed once into _build/mathjax."""
    prefix = ROOT / "_build" / "mathjax"
    es5 = prefix / "node_modules" / "mathjax" / "es5"
    if not es5.exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), f"mathjax@{MATHJAX_VERSION}"],
            check=True,
        )
    return es5


@pytest.fixture(scope="session")
def base_url():
    """Serve a copy of _build/html (MathJax made local) on a free localhost port."""
    shutil.rmtree(SERVE, ignore_errors=True)
    shutil.copytree(HTML, SERVE)
    shutil.copytree(_local_mathjax(), SERVE / "_mathjax")
    for page in SERVE.rglob("*.html"):
        text = page.read_text()
        page.write_text(CDN.sub(r'src="/_mathjax/\1"', text))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SERVE))
    handler.log_message = lambda *a, **k: None
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.handle_error = lambda *a: None  # a browser that closes a connection early is not an error
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="session")
def driver():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,1000",
    ):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _open(driver, url: str) -> None:
    driver.get(url)
    # wait until MathJax has typeset (or there is no MathJax on the page)
    driver.set_script_timeout(30)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "if (!window.MathJax) { done(); return; }"
        "const wait = () => (MathJax.startup && MathJax.startup.promise)"
        "  ? MathJax.startup.promise.then(() => done()) : setTimeout(wait, 100);"
        "wait();"
    )


def _screenshot(driver, page: str, suffix: str = "") -> Path:
    """Resize the window to the whole page (capped) and save a PNG of it."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight;")
    driver.set_window_size(1280, min(int(height) + 100, 16000))
    out = SHOTS / (page.replace("/", "_").replace(".html", f"{suffix}.png"))
    driver.get_screenshot_as_file(str(out))
    driver.set_window_size(1280, 1000)
    return out


@functools.lru_cache(maxsize=None)
def _ids(url: str) -> frozenset[str]:
    html = urllib.request.urlopen(url, timeout=10).read().decode()
    return frozenset(re.findall(r'id="([^"]+)"', html))


@pytest.mark.parametrize("page", PAGES)
def test_page(page, driver, base_url):
    _open(driver, f"{base_url}/{page}")
    shot = _screenshot(driver, page)
    assert shot.stat().st_size > 10_000, f"{page}: the screenshot looks empty"

    images = driver.execute_script(
        "return [...document.querySelectorAll('article img')]"
        ".map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight]);"
    )
    broken = [src for src, complete, w, h in images if not (complete and w > 0 and h > 0)]
    assert not broken, f"{page}: images that did not load: {broken}"
    if page in NOTEBOOK_PAGES:
        assert images, f"{page}: a chapter page without a single figure"
    # Readable on the dark theme too: every figure is opaque (lu.set_style gives it a white background).
    for src in {src for src, *_ in images if src.endswith(".png")}:
        with Image.open(io.BytesIO(urllib.request.urlopen(urllib.parse.urljoin(f"{base_url}/{page}", src)).read())) as im:
            alpha = im.convert("RGBA").getchannel("A").getextrema()
        assert alpha[0] == 255, f"{page}: figure {src} has transparent pixels; it would vanish on the dark theme"

    errors = driver.execute_script(
        "return document.querySelectorAll('.output.traceback, .output.error, .cell_output .traceback').length;"
    )
    text = driver.execute_script("return document.querySelector('article').innerText;")
    assert errors == 0 and "Traceback (most recent call last)" not in text, f"{page}: error output in the page"

    n_math = driver.execute_script("return document.querySelectorAll('.math').length;")
    if n_math:
        rendered = driver.execute_script("return document.querySelectorAll('mjx-container').length;")
        failed = driver.execute_script("return document.querySelectorAll('mjx-merror').length;")
        assert rendered >= n_math and failed == 0, f"{page}: {n_math} math spans, {rendered} rendered, {failed} errors"

    driver.execute_script("document.documentElement.dataset.theme = 'dark';")
    _screenshot(driver, page, suffix="_dark")  # for people to look at
    driver.execute_script("document.documentElement.dataset.theme = 'light';")

    links = driver.execute_script(
        "return [...document.querySelectorAll('a[href]')].map(a => a.href);"
    )
    for link in {l for l in links if l.startswith(base_url)}:
        target, _, fragment = link.partition("#")
        try:
            status = urllib.request.urlopen(target, timeout=10).status
        except urllib.error.HTTPError as err:
            status = err.code
        assert status == 200, f"{page}: broken internal link {link} ({status})"
        if fragment and target.endswith(".html"):
            frag = urllib.parse.unquote(fragment)
            assert frag in _ids(target), f"{page}: link to a missing anchor {link}"
