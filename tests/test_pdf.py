"""tools/pdf.py on a tiny page: title page, contents, bookmarks, figure-only cells
printed without their code, Chinese text in a CJK font. Needs Chromium, ChromeDriver,
npm (a local MathJax) and pypdf (requirements-browser.txt); skipped without them
unless LNBN_REQUIRE_BROWSER=1."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import pdf  # noqa: E402

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
    "AAAABJRU5ErkJggg=="
)
PAGE = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head>
<body><article class="bd-article">
<section id="intro"><h1>A tiny book</h1><p>The article says 计算依赖性 here.</p>
<h2>How it is organized</h2><p>Text.</p></section>
<section id="ch1"><h1>1. First chapter</h1>
<section id="s11"><h2>1.1. A section</h2>
<div class="cell"><div class="cell_input"><pre>ax.plot(x)  # DRAWONLY</pre></div>
<div class="cell_output"><img alt="a dot" src="data:image/png;base64,{PNG}"></div></div>
<div class="cell"><div class="cell_input"><pre>x = 1  # KEEPCODE</pre></div>
<div class="cell_output"><div class="output"><pre>1</pre></div></div></div>
</section></section></article></body></html>
"""


def _missing() -> str | None:
    try:
        import pypdf  # noqa: F401
        import selenium  # noqa: F401
    except ImportError:
        return "pip install -r requirements-browser.txt"
    try:
        pdf.find_chrome()
    except SystemExit as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    if _missing():
        if os.environ.get("LNBN_REQUIRE_BROWSER") == "1":
            raise RuntimeError(_missing())
        pytest.skip(_missing())
    tmp = tmp_path_factory.mktemp("pdf")
    (tmp / "site").mkdir()
    (tmp / "site" / "index.html").write_text(PAGE)
    out = tmp / "book.pdf"
    stats = pdf.print_pdf(
        tmp / "site" / "index.html", out, "A tiny book", "by us", work=tmp / "served"
    )
    return out, stats


def test_title_page_contents_and_bookmarks(printed):
    from pypdf import PdfReader

    out, stats = printed
    reader = PdfReader(out)
    marks = pdf.outline(reader)
    top = [t for d, t, _ in marks if d == 0]
    assert top[:2] == ["A tiny book", "Contents"], marks
    assert "1. First chapter" in top and ("1.1. A section" in {t for _, t, _ in marks})
    pages = {t: p for _, t, p in reversed(marks)}  # a title's first bookmark
    assert pages["A tiny book"] == 1 and pages["Contents"] == 2
    assert pages["1. First chapter"] > 2
    text = pdf.pdf_text(out, reader)
    assert "KEEPCODE" in text and "DRAWONLY" not in text, "figure-only code printed"
    assert pdf.check_pdf(out, stats["cjk_text"], "A tiny book", ["First chapter"]) == []


def test_chinese_text_is_in_a_cjk_font(printed):
    out, stats = printed
    assert set("计算依赖性") <= set(stats["cjk_text"])
    assert stats["no_cjk_font"] == {}, (
        "Chinese drawn without a CJK font (apt-get install fonts-noto-cjk): "
        f"{stats['no_cjk_font']}"
    )


def test_check_pdf_reports_missing_chapters_and_characters(printed):
    out, _ = printed
    problems = pdf.check_pdf(out, "计算龘", "Another title", ["Nowhere chapter"])
    text = " ".join(problems)
    assert "Nowhere chapter" in text and "龘" in text and "title page" in text


def test_contents_give_each_entry_its_page(printed):
    from pypdf import PdfReader

    out, stats = printed
    reader = PdfReader(out)
    assert stats["toc_numbered"] == stats["toc_entries"] == 4
    pages = {t: p for _, t, p in reversed(pdf.outline(reader))}
    assert stats["toc_pages"] == [
        3,
        3,
        pages["1. First chapter"],
        pages["1.1. A section"],
    ]
    contents = reader.pages[1].extract_text()
    assert " ".join(map(str, stats["toc_pages"])) in " ".join(contents.split())
