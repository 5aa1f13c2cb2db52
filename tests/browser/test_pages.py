"""Load every page of the built book in headless Chromium and check what a reader sees.

Run with `make test-browser` (it builds the book and the reader notebooks first).
Per page: every image loaded with a non-zero size and alt text that describes it (not
a file path), chapter figures captioned and named, no broken internal link or anchor,
no error output cell, the math rendered by MathJax, a page description for search
engines and social previews. Per chapter: the download button serves the executed
reader notebook (outputs, no raw MyST left) and the Colab button opens the published
reader copy. Each page's Chinese text is drawn in a CJK font (no empty boxes). Each
page is screenshotted whole, in tiles of 4,000 px, to _build/screenshots/.

The machine is offline, so the pages are served from a copy of _build/html whose
MathJax <script> points at a local copy of the npm registry's `mathjax` package
(tools/pdf.py does the same for the PDF); the published book keeps the CDN.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import pdf  # noqa: E402  (tools/pdf.py: local MathJax, server, Chromium)
import reader_notebooks  # noqa: E402
import site_config  # noqa: E402

HTML = ROOT / "_build" / "html"
SERVE = ROOT / "_build" / "browser-html"
SHOTS = ROOT / "_build" / "screenshots"

# Chapter pages whose figures do not have captions, names and alt text yet: their
# authors are adding them (cell metadata "mystnb": {"figure": {"name", "caption"},
# "image": {"alt"}}). For a page listed here, and only for it, the caption/alt-text
# check skips with a message instead of failing. Empty this set once every chapter
# has them.
ALT_TEXT_PENDING: set[str] = set()

REQUIRED = os.environ.get("LNBN_REQUIRE_BROWSER") == "1"
try:
    from PIL import Image
    from selenium import webdriver  # noqa: F401
except ImportError:  # pragma: no cover
    webdriver = None


def _missing() -> str | None:
    if webdriver is None:
        return "selenium is not installed (pip install -r requirements-browser.txt)"
    try:
        pdf.find_chrome()
    except SystemExit as exc:
        return str(exc)
    if not (HTML / "index.html").exists():
        return "the book is not built (make book)"
    if not (ROOT / "_build" / "reader" / "book").exists():
        return (
            "the reader notebooks are not exported (python tools/reader_notebooks.py)"
        )
    return None


if _missing():
    if REQUIRED:
        raise RuntimeError(_missing())
    pytest.skip(_missing(), allow_module_level=True)

PAGES = sorted(p.relative_to(HTML).as_posix() for p in (HTML / "book").glob("*.html"))
# The Chinese edition (tools/translate.py build): its translated pages get every check
# of an English page, and the language switch is checked both ways.
import translate  # noqa: E402

ZH_PAGES = [
    f"zh/{p}.html"
    for p in translate.translated_pages()
    if (HTML / f"zh/{p}.html").exists()
]
PAGES += ZH_PAGES
NOTEBOOK_PAGES = {f"book/{p.stem}.html" for p in (ROOT / "book").glob("*.ipynb")}
PATH_LIKE = re.compile(
    r"(^|/)[\w.-]+\.(png|jpe?g|svg|gif|webp)$|^(\.\./|/|_images/)", re.I
)


@pytest.fixture(scope="session")
def base_url():
    """Serve a copy of _build/html (MathJax made local) on a free localhost port."""
    server, url = pdf.serve(pdf.offline_copy(HTML, SERVE))
    yield url
    server.shutdown()


@pytest.fixture(scope="session")
def driver():
    drv = pdf.chrome()
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _open(driver, url: str) -> None:
    driver.get(url)
    # wait until MathJax has typeset (or there is no MathJax on the page)
    driver.set_script_timeout(30)
    pdf.wait_for_mathjax(driver)


TILE = 4000  # px of page per screenshot; pages are up to ~40,000 px tall


def _screenshot(driver, page: str, suffix: str = "") -> list[Path]:
    """The whole page as PNG tiles of TILE px (``_t00.png``, ``_t01.png``, ...)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    stem = page.replace("/", "_").replace(".html", suffix)
    for old in SHOTS.glob(f"{stem}_t*.png"):
        old.unlink()
    driver.set_window_size(1280, TILE)
    height = driver.execute_script("return document.documentElement.scrollHeight;")
    tiles = []
    for i, top in enumerate(range(0, max(int(height), 1), TILE)):
        driver.execute_script("window.scrollTo(0, arguments[0]);", top)
        out = SHOTS / f"{stem}_t{i:02d}.png"
        driver.get_screenshot_as_file(str(out))
        tiles.append(out)
    driver.execute_script("window.scrollTo(0, 0);")
    driver.set_window_size(1280, 1000)
    return tiles


@functools.lru_cache(maxsize=None)
def _ids(url: str) -> frozenset[str]:
    html = urllib.request.urlopen(url, timeout=10).read().decode()
    return frozenset(re.findall(r'id="([^"]+)"', html))


@pytest.mark.parametrize("page", PAGES)
def test_page(page, driver, base_url):
    _open(driver, f"{base_url}/{page}")
    shots = _screenshot(driver, page)
    assert shots[0].stat().st_size > 10_000, f"{page}: the screenshot looks empty"

    images = driver.execute_script(
        "return [...document.querySelectorAll('article img')]"
        ".map(i => [i.getAttribute('src'), i.complete, i.naturalWidth,"
        "           i.naturalHeight]);"
    )
    broken = [
        src for src, complete, w, h in images if not (complete and w > 0 and h > 0)
    ]
    assert not broken, f"{page}: images that did not load: {broken}"

    meta = driver.execute_script(
        "const m = n => (document.querySelector("
        "  `meta[name='${n}'], meta[property='${n}']`) || {}).content;"
        "return [m('description'), m('og:title'), m('og:description')];"
    )
    assert all(v and v.strip() for v in meta), (
        f"{page}: page description / Open Graph tags missing: {meta}"
    )
    if page in NOTEBOOK_PAGES:
        assert images, f"{page}: a chapter page without a single figure"
    # Readable on the dark theme too: every figure is opaque (lu.set_style gives it a
    # white background).
    for src in {src for src, *_ in images if src.endswith(".png")}:
        with Image.open(
            io.BytesIO(
                urllib.request.urlopen(
                    urllib.parse.urljoin(f"{base_url}/{page}", src)
                ).read()
            )
        ) as im:
            alpha = im.convert("RGBA").getchannel("A").getextrema()
        assert alpha[0] == 255, (
            f"{page}: figure {src} has transparent pixels; it would vanish on the "
            "dark theme"
        )

    errors = driver.execute_script(
        "return document.querySelectorAll("
        "  '.output.traceback, .output.error, .cell_output .traceback').length;"
    )
    text = driver.execute_script("return document.querySelector('article').innerText;")
    assert errors == 0 and "Traceback (most recent call last)" not in text, (
        f"{page}: error output in the page"
    )

    n_math = driver.execute_script("return document.querySelectorAll('.math').length;")
    if n_math:
        rendered = driver.execute_script(
            "return document.querySelectorAll('mjx-container').length;"
        )
        failed = driver.execute_script(
            "return document.querySelectorAll('mjx-merror').length;"
        )
        assert rendered >= n_math and failed == 0, (
            f"{page}: {n_math} math spans, {rendered} rendered, {failed} errors"
        )

    driver.execute_script("document.documentElement.dataset.theme = 'dark';")
    _screenshot(driver, page, suffix="_dark")  # for people to look at
    driver.execute_script("document.documentElement.dataset.theme = 'light';")

    links = driver.execute_script(
        "return [...document.querySelectorAll('a[href]')].map(a => a.href);"
    )
    for link in {u for u in links if u.startswith(base_url)}:
        target, _, fragment = link.partition("#")
        try:
            status = urllib.request.urlopen(target, timeout=10).status
        except urllib.error.HTTPError as err:
            status = err.code
        assert status == 200, f"{page}: broken internal link {link} ({status})"
        if fragment and target.endswith(".html"):
            frag = urllib.parse.unquote(fragment)
            assert frag in _ids(target), f"{page}: link to a missing anchor {link}"


CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
CJK_PAGES = [
    p for p in PAGES if CJK.search(re.sub(r"<[^>]+>", "", (HTML / p).read_text()))
]


@pytest.mark.parametrize("page", CJK_PAGES)
def test_chinese_text_is_drawn_in_a_cjk_font(page, driver, base_url):
    """Chromium reports the fonts it drew each text node with (tools/pdf.py's
    cjk_font_problems): every element with Chinese characters must use a CJK font.
    Without one (apt-get install fonts-noto-cjk) they are empty boxes."""
    _open(driver, f"{base_url}/{page}")
    text = driver.execute_script("return document.querySelector('article').innerText;")
    assert CJK.search(text), f"{page}: the built HTML has Chinese text, the page none"
    bad = pdf.cjk_font_problems(driver)
    assert not bad, (
        f"{page}: Chinese text drawn without a CJK font (empty boxes; apt-get install "
        f"fonts-noto-cjk): {bad}"
    )


PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}


@pytest.mark.parametrize("page", PAGES)
def test_no_sideways_scroll_at_phone_width(page, driver, base_url):
    """At a phone's width (390 px) no code cell or table widens the whole page: wide
    content scrolls inside its own box. A screenshot per page is kept."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    try:
        _open(driver, f"{base_url}/{page}")
        width, view = driver.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth];"
        )
        SHOTS.mkdir(parents=True, exist_ok=True)
        shot = SHOTS / page.replace("/", "_").replace(".html", "_phone.png")
        driver.get_screenshot_as_file(str(shot))
        wide = driver.execute_script(
            "return [...document.querySelectorAll('article *')]"
            ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)"
            ".filter(e => !e.closest('.highlight, .cell_output, table, .MathJax,"
            " mjx-container, .math'))"
            ".slice(0, 3).map(e => e.tagName + '.' + e.className);"
        )
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert width <= view + 1, f"{page}: {width} px wide at {view} px, e.g. {wide}"


def _git_works() -> bool:
    return (
        subprocess.run(["git", "log", "-1"], cwd=ROOT, capture_output=True).returncode
        == 0
    )


@pytest.mark.parametrize("page", PAGES)
def test_figures_have_alt_text_captions_and_names(page, driver, base_url):
    """Alt text that describes the image (not missing, not a file path) on every
    page; every chapter figure in a <figure> with a caption and an id (its name, so
    numfig numbers it)."""
    _open(driver, f"{base_url}/{page}")
    images = driver.execute_script(
        "return [...document.querySelectorAll('article img')].map(i => {"
        "  const f = i.closest('figure');"
        "  const cap = f ? f.querySelector('figcaption') : null;"
        "  return [i.getAttribute('src'), i.getAttribute('alt'),"
        "          !!i.closest('.cell_output'), !!f,"
        "          cap ? cap.innerText.trim() : '',"
        "          f ? f.id : ''];"
        "});"
    )
    problems = []
    for src, alt, is_output, in_figure, caption, name in images:
        alt = (alt or "").strip()
        if not alt:
            problems.append(f"{src}: no alt text")
        elif (
            alt == src
            or PATH_LIKE.search(alt)
            or (("/" in alt or "\\" in alt) and " " not in alt and not CJK.search(alt))
        ):
            problems.append(f"{src}: alt text is a file path ({alt!r})")
        if is_output and not (in_figure and caption):
            problems.append(f"{src}: a figure without a caption")
        elif is_output and not name:
            problems.append(f"{src}: a figure without a name (id)")
    if problems and page in ALT_TEXT_PENDING:
        pytest.skip(
            f"{page} is in ALT_TEXT_PENDING (tests/browser/test_pages.py): "
            f"{len(problems)} figure problems left for the chapter's authors, "
            f"e.g. {problems[0]}"
        )
    assert not problems, f"{page}: " + "; ".join(problems)


def test_alt_text_allow_list_is_not_stale():
    """A listed page that does not exist is a typo (or a renamed chapter)."""
    stale = ALT_TEXT_PENDING - set(PAGES)
    assert not stale, f"ALT_TEXT_PENDING lists pages that do not exist: {stale}"


@pytest.mark.parametrize("page", sorted(NOTEBOOK_PAGES))
def test_download_and_colab_buttons_serve_reader_notebooks(page, driver, base_url):
    _open(driver, f"{base_url}/{page}")
    links = driver.execute_script(
        "return [...document.querySelectorAll('a[href]')].map(a => a.href);"
    )
    downloads = sorted({u for u in links if u.endswith(".ipynb") and "/_sources/" in u})
    assert downloads, f"{page}: no .ipynb download link"
    served = json.loads(urllib.request.urlopen(downloads[0], timeout=10).read())
    name = Path(page).with_suffix(".ipynb").name
    assert reader_notebooks.check(served, name) == [], (
        f"{page}: the download is not a reader notebook"
    )
    exported = json.loads((ROOT / "_build" / "reader" / "book" / name).read_text())
    assert served == exported, (
        f"{page}: the download differs from _build/reader/book/{name}"
    )
    cells = [
        c for c in served["cells"] if c["cell_type"] == "code" and c.get("outputs")
    ]
    assert any(
        o.get("output_type") in ("display_data", "execute_result")
        and "image/png" in o.get("data", {})
        for c in cells
        for o in c["outputs"]
    ), f"{page}: the downloaded notebook has no figures"
    colab = [
        u for u in links if u.startswith("https://colab.research.google.com/github/")
    ]
    assert colab, f"{page}: no Colab button"
    for link in colab:
        assert link.endswith(f"/blob/{site_config.READER_BRANCH}/book/{name}"), (
            f"{page}: Colab opens {link}"
        )


@pytest.mark.skipif(not _git_works(), reason="not a git checkout: no commit dates")
@pytest.mark.parametrize("page", PAGES[:1] + sorted(NOTEBOOK_PAGES)[:1])
def test_last_updated_date(page, driver, base_url):
    _open(driver, f"{base_url}/{page}")
    text = driver.execute_script(
        "return (document.querySelector('.last-updated') || {innerText: ''}).innerText;"
    )
    assert re.search(r"Last updated on \d{4}-\d{2}-\d{2}", text), (
        f"{page}: footer says {text!r}"
    )


RAW_ROLE = re.compile(r"\{(glue|cite|doc|ref|numref|eq)[^}]*\}`")


@pytest.mark.parametrize("page", sorted(ZH_PAGES))
def test_chinese_page_language_switch_and_no_raw_roles(page, driver, base_url):
    """A Chinese page links the same English page and back; its text has no raw
    MyST roles; its figures have Chinese alt text (the captions are translated)."""
    english = page.removeprefix("zh/")
    _open(driver, f"{base_url}/{page}")
    text = driver.execute_script("return document.querySelector('article').innerText;")
    assert not RAW_ROLE.search(text), f"{page}: raw MyST role in the text"
    prose = driver.execute_script(
        "return [...document.querySelectorAll('article p, article li')]"
        ".filter(e => !e.closest('pre, .cell_input'))"
        ".map(e => e.innerText).join('\\n');"
    )
    assert "**" not in prose, f"{page}: unrendered emphasis (** next to CJK text)"
    switch = driver.execute_script(
        "const a = document.querySelector('.lnbn-lang-switch a');"
        "return a ? [a.href, a.innerText] : null;"
    )
    assert switch and switch[0] == f"{base_url}/{english}", f"{page}: switch {switch}"
    alts = driver.execute_script(
        "return [...document.querySelectorAll('article figure img')]"
        ".map(i => i.getAttribute('alt') || '');"
    )
    assert all(CJK.search(a) for a in alts), f"{page}: untranslated alt text {alts}"
    _open(driver, switch[0])
    back = driver.execute_script(
        "return document.querySelector('.lnbn-lang-switch a').href;"
    )
    assert back == f"{base_url}/{page}", f"{english}: switch leads to {back}"
