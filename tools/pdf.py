"""The whole book as one PDF, offline: headless Chromium prints the single-page build.

    jupyter-book build . --builder singlehtml        # _build/singlehtml/index.html
    python tools/pdf.py _build/singlehtml/index.html _build/pdf/lnbn-book.pdf
    python tools/pdf.py --lang=zh _build/zh/_build/singlehtml/index.html OUT.pdf

(``make pdf`` runs both.) The page is served from a copy whose MathJax ``<script>``
points at a local copy of the npm package ``mathjax`` (no network needed), MathJax
finishes typesetting, the navigation chrome is hidden, and Chromium's DevTools
``Page.printToPDF`` writes an A4 PDF with page numbers: a title page, a table of
contents, every chapter with its figures and math, and the bibliography, with a
bookmark (PDF outline) for every chapter and section. Code cells that only draw a
figure (tagged ``hide-input``, or whose only output is a figure) print without their
code; code boxes break across pages. After printing, the PDF is checked
(``check_pdf``): its outline names every chapter, the text holds the title, and every
Chinese character of the page is in the PDF's text in an embedded CJK font (a missing
font prints empty boxes). Needs Chromium (or Chrome) and its ChromeDriver (Debian:
``apt-get install chromium chromium-driver``; GitHub's runners have Chrome) and npm.
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import logging
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
/* Code boxes break across pages (no empty box at the foot of a page). */
div.cell, div.cell_input, div.highlight, div[class*="highlight-"], pre
  { break-inside: auto !important; display: block !important; }
div.cell_input, div.highlight, pre { box-decoration-break: clone; }
pre { margin-top: 0; }
/* Plotting code: online it is collapsed; on paper the figure stands for it. */
.tag_hide-input > .cell_input, .lnbn-draw-only > .cell_input,
.tag_hide-input details.hide.above-input { display: none !important; }
#lnbn-title-page { break-after: page; text-align: center; padding-top: 30%; }
#lnbn-title-page h1 { font-size: 2.2em; border: none; }
#lnbn-title-page p { font-size: 1.1em; color: #444; }
#lnbn-toc { break-after: page; }
#lnbn-toc .lnbn-toc-title { font-size: 1.8em; font-weight: bold; }
#lnbn-toc ol { list-style: none; padding-left: 0; }
#lnbn-toc ol ol { padding-left: 1.5em; font-size: 0.95em; }
#lnbn-toc a { text-decoration: none; color: inherit; }
#lnbn-toc .lnbn-toc-page { float: right; padding-left: 1em; }
"""

# The contents' page numbers, written in after a first print has placed the headings.
TOC_PAGES_JS = """
const pages = arguments[0];
const links = [...document.querySelectorAll('#lnbn-toc a')];
links.forEach((a, i) => {
  let s = a.parentElement.querySelector(':scope > .lnbn-toc-page');
  if (!s) {
    s = document.createElement('span'); s.className = 'lnbn-toc-page';
    a.parentElement.insertBefore(s, a);
  }
  s.textContent = pages[i] == null ? '' : String(pages[i]);
});
"""

# The title page, the table of contents (chapters and their sections, linked) and the
# plotting cells to fold, put into the single page before it prints.
FRONT_MATTER_JS = """
const [title, subtitle] = arguments;
const article = document.querySelector('.bd-article') || document.body;
document.querySelectorAll('div.cell').forEach(cell => {
  const out = cell.querySelector('.cell_output');
  if (!out || !cell.querySelector('.cell_input')) return;
  const kids = [...out.children];
  const onlyFigures = kids.length > 0 && kids.every(k =>
    (k.matches('img') || k.querySelector('img')) && !k.querySelector('pre, table'));
  if (onlyFigures) cell.classList.add('lnbn-draw-only');
});
const toc = document.createElement('nav');
toc.id = 'lnbn-toc';
toc.innerHTML = '<p class="lnbn-toc-title">Contents</p>';
const top = document.createElement('ol');
toc.appendChild(top);
let current = null;
article.querySelectorAll('h1, h2').forEach((h, i) => {
  const text = h.innerText.replace(/[#\u00b6]/g, '').trim();
  if (!text) return;
  if (!h.id) h.id = 'lnbn-h-' + i;
  const li = document.createElement('li');
  const a = document.createElement('a');
  a.href = '#' + h.id; a.textContent = text; li.appendChild(a);
  if (h.tagName === 'H1' || !current) {
    top.appendChild(li);
    current = document.createElement('ol');
    li.appendChild(current);
  } else { current.appendChild(li); }
});
const page = document.createElement('section');
page.id = 'lnbn-title-page';
const t = document.createElement('h1'); t.textContent = title;
const s = document.createElement('p'); s.textContent = subtitle;
page.append(t, s);
article.prepend(page, toc);
return top.children.length;
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


def print_pdf(
    index: Path,
    out: Path,
    title: str = "",
    subtitle: str = "",
    work: Path | None = None,
) -> dict:
    """Print the single-page build at ``index`` to ``out``; return counts to check.
    ``work``: where the served copy goes (default _build/pdf/site)."""
    site = offline_copy(index.parent, work or ROOT / "_build" / "pdf" / "site")
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
            "document.querySelectorAll('details:not(.hide.above-input)')"
            ".forEach(d => d.open = true);",
            PRINT_CSS,
        )
        chapters = driver.execute_script(FRONT_MATTER_JS, title, subtitle)
        headings = driver.execute_script(
            "return [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')]"
            ".filter(h => h.getClientRects().length)"
            ".map(h => h.innerText.replace(/#\\s*$/, '').replace(/\\s+/g, ' ').trim());"
        )
        cjk_text = "".join(
            CJK.findall(driver.execute_script("return document.body.innerText;"))
        )
        no_cjk_font = cjk_font_problems(driver)
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
        options = {
            "printBackground": True,
            "preferCSSPageSize": True,
            "displayHeaderFooter": True,
            "headerTemplate": "<div></div>",
            "footerTemplate": footer,
            "generateDocumentOutline": True,  # bookmarks from h1..h6
            "generateTaggedPDF": True,
        }
        entries = driver.execute_script(
            "return [...document.querySelectorAll('#lnbn-toc a')]"
            ".map(a => a.textContent);"
        )
        data, numbers = b"", None
        for _ in range(3):  # print, number the contents, print again until they agree
            data = base64.b64decode(
                driver.execute_cdp_cmd("Page.printToPDF", options)["data"]
            )
            found = toc_page_numbers(data, entries)
            if found == numbers:
                break
            numbers = found
            driver.execute_script(TOC_PAGES_JS, numbers)
    finally:
        driver.quit()
        server.shutdown()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    stats["pages"] = len(re.findall(rb"/Type\s*/Page[^s]", data))
    stats["bytes"] = len(data)
    stats["toc_chapters"] = chapters
    stats["toc_pages"] = numbers or []
    stats["toc_numbered"] = sum(n is not None for n in numbers or [])
    stats["toc_entries"] = len(entries)
    stats["cjk_text"] = cjk_text
    stats["no_cjk_font"] = no_cjk_font
    rewrite_outline(out, headings)
    return stats


def toc_page_numbers(pdf: bytes, entries: list[str]) -> list[int | None]:
    """The page (from 1, as the footer counts) of each contents entry: the first
    bookmark at or after the previous match whose letters start with the entry's."""
    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    marks = [m for m in outline(PdfReader(io.BytesIO(pdf))) if m[2] > 1]  # after p. 1
    numbers, j = [], 0
    for entry in entries:
        key, page = _key(entry)[:24], None
        for k in range(j, len(marks)):
            if key and key in _key(marks[k][1]):
                page, j = marks[k][2], k + 1
                break
        numbers.append(page)
    return numbers


CJK_FONT = re.compile(r"CJK|Han|Hei|Song|Ming|WenQuanYi|Droid Sans Fallback", re.I)


def cjk_font_problems(driver, limit: int = 40) -> dict[str, list[str]]:
    """Chinese text the page draws without a CJK font: ``{text: fonts used}``.

    Chromium reports the fonts it drew each text node with (DevTools
    ``CSS.getPlatformFontsForNode``); without a CJK font installed
    (``apt-get install fonts-noto-cjk``) Chinese characters are empty boxes."""
    driver.execute_script(
        "const re = /[\\u3400-\\u4dbf\\u4e00-\\u9fff]/;"
        "const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);"
        "while (w.nextNode()) if (re.test(w.currentNode.nodeValue))"
        "  w.currentNode.parentElement.setAttribute('data-lnbn-cjk', '');"
    )
    driver.execute_cdp_cmd("DOM.enable", {})
    driver.execute_cdp_cmd("CSS.enable", {})
    bad = {}
    try:
        root = driver.execute_cdp_cmd("DOM.getDocument", {"depth": -1})["root"]
        nodes = driver.execute_cdp_cmd(
            "DOM.querySelectorAll",
            {"nodeId": root["nodeId"], "selector": "[data-lnbn-cjk]"},
        )["nodeIds"]
        for node in nodes[:limit]:
            used = driver.execute_cdp_cmd(
                "CSS.getPlatformFontsForNode", {"nodeId": node}
            )["fonts"]
            families = sorted({f["familyName"] for f in used})
            if used and not any(CJK_FONT.search(f) for f in families):
                html = driver.execute_cdp_cmd("DOM.getOuterHTML", {"nodeId": node})
                bad[re.sub(r"<[^>]+>", "", html["outerHTML"])[:40]] = families
    finally:
        driver.execute_cdp_cmd("CSS.disable", {})
        driver.execute_cdp_cmd("DOM.disable", {})
    return bad


def _flat(text: str) -> str:
    """Text without whitespace, NFKC-normalized (PDF text extraction may give CJK
    compatibility forms, e.g. the Kangxi radical U+2F64 for 用, and break lines)."""
    import unicodedata

    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def _key(text: str) -> str:
    return re.sub(r"[\W\d_]+", "", text).lower()


def rewrite_outline(path: Path, headings: list[str]) -> None:
    """Chromium's bookmarks with the headings' own text (its titles run wrapped lines
    together and repeat some), the book's chapters at the top level, and a bookmark
    for the contents page."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import Fit

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # Chromium's trailer size

    reader = PdfReader(path)
    rows: list[tuple[int, str, int, float | None]] = []

    def walk(items, depth):
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
            else:
                page = reader.get_destination_page_number(item)
                rows.append((depth, item.title, page, item.top))

    walk(reader.outline, 0)
    if not rows:
        return
    j = 0  # the headings, in order, matched to the bookmarks by their letters
    for i, (d, t, p, y) in enumerate(rows):
        for k in range(j, min(j + 8, len(headings))):
            if _key(headings[k]) and _key(headings[k])[:24] in _key(t):
                rows[i], j = (d, headings[k], p, y), k + 1
                break
    writer = PdfWriter(clone_from=reader)
    del writer._root_object["/Outlines"]
    parents: list = []
    for i, (depth, text, page, top) in enumerate(rows):
        depth = max(depth - 1, 0) if i else 0
        parent = parents[depth - 1] if 0 < depth <= len(parents) else None
        fit = Fit.xyz(top=top) if top is not None else Fit.fit()
        item = writer.add_outline_item(
            title=text, page_number=page, parent=parent, fit=fit
        )
        parents[depth:] = [item]
        if i == 0 and len(reader.pages) > 1:
            writer.add_outline_item(title="Contents", page_number=1)
    with open(path, "wb") as fh:
        writer.write(fh)


CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")


def outline(reader) -> list[tuple[int, str, int]]:
    """The PDF's bookmarks as ``(depth, title, page number from 1)``."""
    rows: list[tuple[int, str, int]] = []

    def walk(items, depth):
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
            else:
                rows.append(
                    (depth, item.title, reader.get_destination_page_number(item) + 1)
                )

    walk(reader.outline, 0)
    return rows


def pdf_text(path: Path, reader=None) -> str:
    """The PDF's text: poppler's pdftotext where installed (it decodes Chromium's
    Type 3 CJK glyphs that pypdf misses), else pypdf."""
    if shutil.which("pdftotext"):
        return subprocess.run(
            ["pdftotext", str(path), "-"], capture_output=True, text=True, check=True
        ).stdout
    return "\n".join(p.extract_text() or "" for p in reader.pages)


def check_pdf(path: Path, cjk_text: str, title: str, chapters: list[str]) -> list[str]:
    """What is wrong with the printed PDF: missing bookmarks, missing title, Chinese
    characters not in the text or not in a CJK font (the empty boxes of a missing
    font)."""
    from pypdf import PdfReader

    reader = PdfReader(path)
    problems = []
    marks = outline(reader)
    names = " | ".join(_key(t) for _, t, _ in marks)
    missing = [c for c in chapters if _key(c) not in names]
    if missing:
        problems.append(f"no bookmark for {missing}")
    first = reader.pages[0].extract_text() or ""
    if title and _flat(title.split(":")[0]) not in _flat(first):
        problems.append(f"page 1 is not the title page: {first[:80]!r}")
    want = set(cjk_text) - set("\u3000")
    if want:
        got = set(CJK.findall(pdf_text(path, reader)))
        lost = want - got
        if lost:
            problems.append(
                f"{len(lost)} of {len(want)} Chinese characters are not in the PDF's "
                f"text (no CJK font? apt-get install fonts-noto-cjk): "
                f"{''.join(sorted(lost)[:20])}"
            )
    return problems


def main(argv: list[str]) -> int:
    zh = "--lang=zh" in argv  # the Chinese edition (tools/translate.py)
    argv = [a for a in argv if a != "--lang=zh"]
    if len(argv) != 2:
        print(__doc__)
        return 2
    index, out = Path(argv[0]), Path(argv[1])
    if not index.exists():
        raise SystemExit(
            f"{index} is missing: run `jupyter-book build . --builder singlehtml` first"
        )
    import yaml

    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    title = cfg.get("title", "")
    sys.path.insert(0, str(ROOT / "tools"))
    import translate

    if zh:
        title = translate.TITLE_ZH
    subtitle = " \u00b7 ".join(x for x in (cfg.get("author", ""), _commit_line()) if x)
    stats = print_pdf(index, out, title, subtitle)
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
    if stats["no_cjk_font"]:
        problems.append(
            "Chinese text drawn without a CJK font (empty boxes; apt-get install "
            f"fonts-noto-cjk): {stats['no_cjk_font']}"
        )
    if stats["toc_numbered"] < 0.9 * stats["toc_entries"]:
        problems.append(
            f"only {stats['toc_numbered']} of {stats['toc_entries']} contents entries "
            "found their page among the bookmarks"
        )
    import site_config

    chapters = [t for _, t in site_config.chapters()]
    if zh:
        chapters = translate.zh_chapter_titles()
    problems += check_pdf(out, stats["cjk_text"], title, chapters)
    if problems:
        print("PDF check failed: " + "; ".join(problems))
        return 1
    from pypdf import PdfReader

    marks = outline(PdfReader(out))
    print(
        f"outline: {len(marks)} bookmarks, {sum(d == 0 for d, _, _ in marks)} "
        f"at the top level; contents: {stats['toc_numbered']} of "
        f"{stats['toc_entries']} entries with their page; Chinese text in a CJK font"
    )
    return 0


def _commit_line() -> str:
    """``built from commit abc123 on 2026-12-08`` (empty outside a git checkout)."""
    out = subprocess.run(
        ["git", "log", "-1", "--format=%h %cs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode or not out.stdout.strip():
        return ""
    commit, day = out.stdout.split()
    return f"built from commit {commit} on {day}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
