"""The whole book as one PDF, offline: headless Chromium prints the single-page build.

    jupyter-book build . --builder singlehtml        # _build/singlehtml/index.html
    python tools/pdf.py _build/singlehtml/index.html _build/pdf/lnbn-book.pdf

(``make pdf`` runs both.) The page is served from a copy whose MathJax ``<script>``
points at a local copy of the npm package ``mathjax`` (no network needed), MathJax
finishes typesetting, the navigation chrome is hidden, and Chromium's DevTools
``Page.printToPDF`` writes an A4 PDF with page numbers: every chapter, its figures and
math, and the bibliography. Needs Chromium (or Chrome) and its ChromeDriver (Debian:
``apt-get install chromium chromium-driver``; GitHub's runners have Chrome) and npm.
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MATHJAX_VERSION = "3.2.2"
CDN = re.compile(r'src="https://cdn\.jsdelivr\.net/npm/mathjax@3/es5/([\w.-]+\.js)"')
PRINT_CSS = """
@page { size: A4; margin: 16mm 14mm 18mm 14mm; }
.bd-header, .bd-header-article, .bd-sidebar-primary, .bd-sidebar-secondary,
.prev-next-area, .bd-footer-content, .bd-footer-article, .header-article-items,
#pst-back-to-top, .headerlink, .skip-link, .search-button__wrapper,
.theme-switch-button, .bd-search
  { display: none !important; }
.bd-main .bd-content .bd-article-container { max-width: 100% !important; }
.bd-page-width { max-width: 100% !important; }
html, body { background: white !important; }
pre, .highlight, div.cell_input, div.cell_output, .output
  { overflow: visible !important; }
pre { white-space: pre-wrap !important; word-break: break-word; }
div.cell_input, .highlight, pre { break-inside: auto !important; }
figure, img, table, .math { break-inside: avoid; }
h1, h2, h3 { break-after: avoid; }
section > h1 { break-before: page; }
"""


def find_chrome() -> tuple[str, str]:
    """``(browser, driver)``: CHROME_BIN/CHROMEDRIVER, GitHub's runner, or Debian's."""
    github = os.environ.get("CHROMEWEBDRIVER")  # GitHub's runners: Chrome + its driver
    names = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
    if github:
        names = names[2:] + names[:2]
    found = [shutil.which(n) for n in names]
    browser = os.environ.get("CHROME_BIN") or next((f for f in found if f), None)
    driver = os.environ.get("CHROMEDRIVER") or (
        str(Path(github) / "chromedriver") if github else shutil.which("chromedriver")
    )
    if not browser or not driver or not Path(driver).exists():
        raise SystemExit(
            "need Chromium and ChromeDriver (apt-get install chromium chromium-driver);"
            " "
            f"found browser={browser}, driver={driver}"
        )
    return browser, driver


def local_mathjax(prefix: Path = ROOT / "_build" / "mathjax") -> Path:
    """The npm package ``mathjax`` (its es5/ folder), installed once into ``prefix``."""
    es5 = prefix / "node_modules" / "mathjax" / "es5"
    if not es5.exists():
        subprocess.run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(prefix),
                f"mathjax@{MATHJAX_VERSION}",
            ],
            check=True,
        )
    return es5


def offline_copy(site: Path, dest: Path) -> Path:
    """Copy a built site to ``dest``, its MathJax served from ``/_mathjax``."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(site, dest)
    shutil.copytree(local_mathjax(), dest / "_mathjax")
    for page in dest.rglob("*.html"):
        text = page.read_text()
        page.write_text(CDN.sub(r'src="/_mathjax/\1"', text))
    return dest


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no line per request
        pass


def serve(directory: Path) -> tuple[socketserver.TCPServer, str]:
    """Serve ``directory`` on a free localhost port in a background thread."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    # a browser closing a connection early is no error
    server.handle_error = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def chrome(width: int = 1280, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = find_chrome()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    drv.set_page_load_timeout(120)
    drv.set_script_timeout(120)
    return drv


def wait_for_mathjax(driver) -> None:
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "if (!window.MathJax) { done(); return; }"
        "const wait = () => (MathJax.startup && MathJax.startup.promise)"
        "  ? MathJax.startup.promise.then(() => done()) : setTimeout(wait, 100);"
        "wait();"
    )


def single_page(index: Path) -> Path:
    """The page ``index`` redirects to (Jupyter Book's index.html is a redirect)."""
    m = re.search(
        r'http-equiv="Refresh" content="0; url=([^"]+)"', index.read_text(), re.I
    )
    return (index.parent / m.group(1)).resolve() if m else index


def print_pdf(index: Path, out: Path, title: str = "") -> dict:
    """Print the single-page build at ``index`` to ``out``; return counts to check."""
    site = offline_copy(index.parent, ROOT / "_build" / "pdf" / "site")
    # Sphinx's single page links _static/ and _images/ from the site root, even when the
    # root document lives in a folder (book/intro.html): print it from the root.
    page = "whole-book.html"
    rel = single_page(index).relative_to(index.parent.resolve())
    (site / page).write_text((site / rel).read_text())
    server, base = serve(site)
    driver = chrome()
    try:
        driver.get(f"{base}/{page}")
        wait_for_mathjax(driver)
        driver.execute_script(
            "const s = document.createElement('style'); s.textContent = arguments[0];"
            "document.head.appendChild(s);"
            "document.querySelectorAll('details').forEach(d => d.open = true);",
            PRINT_CSS,
        )
        stats = driver.execute_script(
            "const imgs = [...document.querySelectorAll("
            "  'article img, .bd-article img')];"
            "const ok = i => i.complete && i.naturalWidth > 0;"
            "const n = sel => document.querySelectorAll(sel).length;"
            "return {images: imgs.filter(ok).length,"
            " broken: imgs.filter(i => !ok(i)).map(i => i.src),"
            " math: n('mjx-container'), math_errors: n('mjx-merror'),"
            " citations: n('.citation, div.citation, dl.citation > dt')};"
        )
        footer = (
            '<div style="font-size:8px;width:100%;text-align:center;color:#555;">'
            f'{title} &middot; <span class="pageNumber"></span> / '
            '<span class="totalPages"></span></div>'
        )
        result = driver.execute_cdp_cmd(
            "Page.printToPDF",
            {
                "printBackground": True,
                "preferCSSPageSize": True,
                "displayHeaderFooter": True,
                "headerTemplate": "<div></div>",
                "footerTemplate": footer,
            },
        )
    finally:
        driver.quit()
        server.shutdown()
    out.parent.mkdir(parents=True, exist_ok=True)
    data = base64.b64decode(result["data"])
    out.write_bytes(data)
    stats["pages"] = len(re.findall(rb"/Type\s*/Page[^s]", data))
    stats["bytes"] = len(data)
    return stats


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    index, out = Path(argv[0]), Path(argv[1])
    if not index.exists():
        raise SystemExit(
            f"{index} is missing: run `jupyter-book build . --builder singlehtml` first"
        )
    import yaml

    title = yaml.safe_load((ROOT / "_config.yml").read_text()).get("title", "")
    stats = print_pdf(index, out, title)
    print(
        f"{out}: {stats['pages']} pages, {stats['bytes'] / 1e6:.1f} MB, "
        f"{stats['images']} figures, {stats['math']} formulas, "
        f"{stats['citations']} bibliography entries"
    )
    problems = []
    if stats["broken"]:
        problems.append(f"images that did not load: {stats['broken']}")
    if stats["math_errors"]:
        problems.append(f"{stats['math_errors']} MathJax errors")
    if stats["images"] == 0 or stats["math"] == 0 or stats["pages"] < 10:
        problems.append(
            "the PDF looks incomplete (no figures, no math, or under 10 pages)"
        )
    if problems:
        print("PDF check failed: " + "; ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
