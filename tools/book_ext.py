"""The book's own Sphinx extension (``sphinx.local_extensions`` in _config.yml).

* When a build starts: clears the execution cache if the library, the requirements or
  ``LNBN_SEED`` changed since it was filled (``tools/exec_cache.py``).
* On every page: a ``<meta name="description">`` and Open Graph / Twitter card tags
  (title, description, the page's address and first figure when ``html.baseurl`` is
  set), and "Last updated on" from the last git commit that touched the page's source.
* A language switch at the top of every page, to the same page of the other edition:
  the English book links ``zh/<page>.html`` (the Simplified Chinese edition that
  ``tools/translate.py build`` writes into ``_build/html/zh``; a page not yet
  translated says so), a Chinese page links back.
* With ``LNBN_BOOK_PDF=1`` (set by the Pages workflow, which publishes the PDF): a
  "PDF" entry in every page's download menu, linking ``lnbn-book.pdf`` at the site root.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from sphinx.util import logging as sphinx_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
import exec_cache  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PDF_NAME = "lnbn-book.pdf"
PDF_NAME_ZH = "lnbn-book-zh.pdf"  # the Chinese edition's (make pdf-zh), at zh/


def _clear_stale_cache(app, config) -> None:
    cache = getattr(config, "nb_execution_cache_path", "") or str(
        Path(app.outdir).parent / ".jupyter_cache"
    )
    exec_cache.ensure(Path(cache).parent, log=lambda m: print(m, flush=True))


@lru_cache(maxsize=None)
def _git_date(path: str) -> str:
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%cs", "--", path],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out


def _description(doctree, limit: int = 200) -> str:
    from docutils import nodes

    for para in doctree.findall(nodes.paragraph):
        text = " ".join(para.astext().split())
        if len(text) > 40:
            return (
                text
                if len(text) <= limit
                else text[: limit - 1].rsplit(" ", 1)[0] + "…"
            )
    return ""


def _is_zh(app) -> bool:
    return (app.config.language or "en").startswith("zh")


def _language_switch(app, pagename: str) -> tuple[str, str]:
    """``(link HTML, alternate-link meta tag)`` to ``pagename`` in the other edition."""
    up = "../" * pagename.count("/")
    if _is_zh(app):
        url, lang, text = f"{up}../{pagename}.html", "en", "English"
    else:
        done = (ROOT / "book" / "zh" / f"{Path(pagename).name}.yml").exists()
        url, lang = f"{up}zh/{pagename}.html", "zh-Hans"
        text = "中文" if done else "中文（尚未翻译）"
    link = (
        f'<p class="lnbn-lang-switch"><a href="{url}" hreflang="{lang}" '
        f'lang="{lang}">{text}</a></p>\n'
    )
    return link, f'<link rel="alternate" hreflang="{lang}" href="{url}" />'


def _page_context(app, pagename, templatename, context, doctree) -> None:
    if doctree is None:
        return
    link, alternate = _language_switch(app, pagename)
    context["body"] = link + context.get("body", "")
    base = (app.config.html_baseurl or "").rstrip("/")
    title = re.sub(r"<[^>]+>", "", context.get("title", "")) or app.config.html_title
    site = app.config.html_title or app.config.project
    desc = _description(doctree) or site
    tags = [
        f'<meta name="description" content="{html.escape(desc)}" />',
        '<meta property="og:type" content="article" />',
        f'<meta property="og:site_name" content="{html.escape(site)}" />',
        f'<meta property="og:title" content="{html.escape(title)}" />',
        f'<meta property="og:description" content="{html.escape(desc)}" />',
    ]
    image = ""
    if base:
        tags.append(f'<meta property="og:url" content="{base}/{pagename}.html" />')
        body = context.get("body", "")
        m = re.search(r'<img[^>]+src="(?:\.\./)*(_images/[^"]+\.png)"', body)
        if m:
            image = f"{base}/{m.group(1)}"
            tags.append(f'<meta property="og:image" content="{image}" />')
    card = "summary_large_image" if image else "summary"
    tags.append(f'<meta name="twitter:card" content="{card}" />')
    tags.append(alternate)
    context["metatags"] = context.get("metatags", "") + "\n".join(tags) + "\n"

    source = app.env.doc2path(pagename)
    date = _git_date(str(source))
    if date:
        context["last_updated"] = date

    if os.environ.get("LNBN_BOOK_PDF") == "1":
        for button in context.get("header_buttons", []):
            if button.get("label") == "download-buttons":
                button["buttons"].append(
                    {
                        "type": "link",
                        "url": context["pathto"](
                            PDF_NAME_ZH if _is_zh(app) else PDF_NAME, 1
                        ),
                        "text": ".pdf (whole book)",
                        "icon": "fas fa-file-pdf",
                        "tooltip": "Download the whole book as a PDF",
                        "label": "download-book-pdf-button",
                    }
                )


_PLAIN_QUOTES = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}
)


def _translated_figures(app, doctree) -> None:
    """Chinese edition: swap in the translated captions and alt texts of figures.

    ``tools/translate.py`` leaves a notebook's code cells (metadata included) as in
    English, so the page hits the English execution cache, and stores the pairs in
    the notebook metadata under ``lnbn_zh_figures``.
    """
    from docutils import nodes

    path = Path(app.env.doc2path(app.env.docname))
    if path.suffix != ".ipynb":
        return
    pairs = json.loads(path.read_text()).get("metadata", {}).get("lnbn_zh_figures")
    if not pairs:
        return

    def key(text: str) -> str:  # the caption's text after Sphinx's smart quotes
        return " ".join(text.translate(_PLAIN_QUOTES).split())

    zh, used = {key(en): text for en, text in pairs}, set()
    for caption in doctree.findall(nodes.caption):
        k = key(caption.astext())
        if k in zh:
            used.add(k)
            caption.children = []
            caption += nodes.Text(zh[k])
    for image in doctree.findall(nodes.image):
        k = key(image.get("alt", ""))
        if k in zh:
            used.add(k)
            image["alt"] = zh[k]
    for en in sorted(set(zh) - used):
        sphinx_logging.getLogger(__name__).warning(
            f"zh: no figure caption or alt text matches {en[:60]!r}", location=path
        )


def setup(app):
    app.connect("config-inited", _clear_stale_cache)
    app.connect("doctree-read", _translated_figures)
    # after sphinx-book-theme has assembled its header buttons (priority 501+)
    app.connect("html-page-context", _page_context, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
