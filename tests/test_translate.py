"""The Chinese edition (tools/translate.py): store, consistency checks, glossary."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import translate as tr  # noqa: E402

PAGE = """# Title

A paragraph with {glue:text}`ch9_x:.2f` and {cite:p}`a2020,b2021`.

```{admonition} In short
:class: tip
Inside a fence.

Still inside.
```

## A section

See {doc}`the ledger <evidence>` and $x + 1$.

```{evidence-ledger}
```
"""


def test_md_units_keep_fences_whole_and_skip_generated_blocks():
    units = tr.md_units(PAGE)
    ids = [u for u, _ in units]
    assert ids[0] == "md:title:0" and ids[-1] is None  # the ledger is verbatim
    fence = [b for _, b in units if b.startswith("```{admonition}")]
    assert len(fence) == 1 and "Still inside." in fence[0]
    assert "md:a-section:0" in ids and "md:a-section:1" in ids


def test_references_and_mismatches():
    en = "x {glue:text}`k:.2f` {cite:p}`a,b` {doc}`t <evidence>` $a+b$ $$\nc\n$$"
    refs = tr.references(en)
    assert set(refs["cite"]) == {"a", "b"} and set(refs["xref"]) == {"doc:evidence"}
    assert set(refs["math"]) == {"a+b", "c"}
    zh = "中文 {glue:text}`k:.2f` {cite:p}`a,b` {doc}`证据 <evidence>` $a+b$ $$\nc\n$$"
    assert tr.mismatches(en, zh) == []
    drifted = zh.replace("k:.2f", "k:.3f").replace("a,b", "a")
    problems = " ".join(tr.mismatches(en, drifted))
    assert "glue" in problems and "cite" in problems


def test_inline_math_may_span_a_line_break():
    en = "the output $\\hat x\\, s /\n\\sqrt{s}$ and more"
    assert set(tr.references(en)["math"]) == {"\\hat x\\, s / \\sqrt{s}"}


def _nb():
    cells = [
        {"id": "a", "cell_type": "markdown", "metadata": {}, "source": "# T\n\nHello"},
        {
            "id": "b",
            "cell_type": "code",
            "metadata": {
                "mystnb": {
                    "figure": {"caption": "Cap", "name": "f"},
                    "image": {"alt": "Alt"},
                }
            },
            "source": "x = 1",
            "outputs": [],
            "execution_count": None,
        },
    ]
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_notebook_units_status_and_output():
    nb = _nb()
    units = tr.nb_units(nb)
    assert [u.id for u in units] == ["md:a", "caption:b", "alt:b"]
    store = {
        "md:a": {"hash": tr.text_hash("# T\n\nHello"), "zh": "# 标题\n\n你好"},
        "caption:b": {"hash": "stale", "zh": "图注"},
        "alt:b": {"hash": tr.text_hash("Alt"), "zh": "替代文本"},
    }
    out = tr.zh_notebook(nb, store)
    assert out["cells"][1] == nb["cells"][1]  # code cell and its metadata: same hash
    assert out["cells"][0]["source"] == "# 标题\n\n你好"
    figures = dict(out["metadata"][tr.FIGURES_KEY])
    assert figures["Cap"] == f"图注（{tr.STALE_NOTE}）" and figures["Alt"] == "替代文本"
    assert nb["cells"][0]["source"] == "# T\n\nHello"  # the English is not touched


def test_stale_note_goes_after_the_heading():
    assert tr.with_note("# T\nbody", "N").split("\n")[:3] == ["# T", "", "N"]
    assert tr.with_note("body", "N").startswith("N\n\nbody")


def test_cjk_line_breaks_are_joined_but_not_latin_ones():
    assert tr.cjk_join("中文\n  继续") == "中文继续"
    assert tr.cjk_join("中文\nLatin") == "中文\nLatin"
    assert tr.cjk_join("* 一\n* 二") == "* 一\n* 二"
    assert tr.cjk_join(":alt: 一幅图\n图注") == ":alt: 一幅图\n图注"  # option line kept
    assert tr.cjk_join("## 标题\n中文") == "## 标题\n中文"
    assert tr.cjk_join("一\n二\n三") == "一二三"


def test_cache_key_of_a_translated_notebook_equals_the_english_one():
    """jupyter-cache matches on code cells: the Chinese notebook hits the same entry."""
    import nbformat
    from jupyter_cache.cache.main import JupyterCacheBase

    cache = JupyterCacheBase.__new__(JupyterCacheBase)
    nb = _nb()
    store = {
        u.id: {"hash": tr.text_hash(u.text), "zh": "中文"} for u in tr.nb_units(nb)
    }
    en = nbformat.from_dict(nb)
    zh = nbformat.from_dict(tr.zh_notebook(nb, store))
    assert cache.create_hashed_notebook(en)[1] == cache.create_hashed_notebook(zh)[1]


# --- the real store -----------------------------------------------------------------

TRANSLATED = tr.translated_pages()


def test_the_intro_is_translated_and_quotes_the_four_claims_in_the_original():
    assert "book/intro" in TRANSLATED
    zh = "\n".join(e["zh"] for e in tr.load_store(ROOT / "book/intro.md").values())
    for claim in ("计算依赖性", "序列长度变化", "训练稳定性", "内存效率"):
        assert claim in zh


@pytest.mark.parametrize("page", TRANSLATED)
def test_translated_page_has_every_unit_and_the_same_references(page):
    path = tr.page_file(page)
    st = tr.page_status(path, tr.load_store(path))
    assert not st.missing, f"{path.name}: no translation of {st.missing}"
    assert not st.mismatched, "\n".join(st.mismatched)


def glossary_terms() -> list[tuple[list[str], str]]:
    """(English forms, required Chinese) of every row the glossary marks ✓."""
    rows = []
    for line in tr.GLOSSARY.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[2] == "✓":
            rows.append(([f.strip() for f in cells[0].split(",")], cells[1]))
    return rows


def test_glossary_has_checked_terms():
    terms = dict((forms[0], zh) for forms, zh in glossary_terms())
    assert terms["normalize"] == "归一化" and terms["batch"] == "批"


@pytest.mark.parametrize("page", TRANSLATED)
def test_glossary_terms_are_translated_consistently(page):
    path = tr.page_file(page)
    store = tr.load_store(path)
    problems = []
    for unit in tr.page_units(path):
        prose = re.sub(r"`[^`]*`|\$[^$]*\$|\{[^}]*\}", " ", unit.text)  # not code/roles
        zh = str(store[unit.id]["zh"])
        for forms, term in glossary_terms():
            pattern = r"\b(" + "|".join(re.escape(f) for f in forms) + r")\b"
            if re.search(pattern, prose, re.I) and term not in zh:
                problems.append(f"{unit.id}: '{forms[0]}' without '{term}'")
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_zh_toc_lists_only_translated_pages_and_the_glossary():
    toc = tr.zh_toc()
    files = [c["file"] for p in toc["parts"] for c in p["chapters"]]
    files += [
        s["file"]
        for p in toc["parts"]
        for c in p["chapters"]
        for s in c.get("sections", [])
    ]
    assert set(files) <= set(TRANSLATED) | {tr.GLOSSARY_PAGE}
    assert tr.GLOSSARY_PAGE in files and toc["root"] == "book/intro"


def test_untranslated_page_is_marked_and_orphaned(tmp_path):
    page = tmp_path / "x.md"
    page.write_text("# Title\n\nText.\n")
    out = tr.untranslated(page)
    assert out.startswith("---\norphan: true\n---") and tr.UNTRANSLATED_NOTE in out
    nb_path = tmp_path / "y.ipynb"
    nb_path.write_text(json.dumps(_nb()))
    nb = json.loads(tr.untranslated(nb_path))
    assert nb["metadata"]["orphan"] is True
    assert tr.UNTRANSLATED_NOTE in nb["cells"][0]["source"]


def test_zh_config_shares_the_execution_cache_and_searches_in_chinese(tmp_path):
    cfg = tr.zh_config(ROOT, tmp_path)
    assert cfg["execute"]["execute_notebooks"] == "cache"
    assert cfg["execute"]["cache"] == str((tmp_path / ".jupyter_cache").resolve())
    assert cfg["sphinx"]["config"]["html_search_language"] == "zh"
    assert cfg["sphinx"]["config"]["language"] == "zh_CN"


def test_template_then_mark_records_hashes_and_drops_the_english(tmp_path, monkeypatch):
    import yaml

    monkeypatch.setattr(tr, "STORE", tmp_path / "zh")
    (tmp_path / "zh").mkdir()
    page = tmp_path / "p.md"
    page.write_text("# Title\n\nSome text with {cite:p}`a2020`.\n")
    data = yaml.safe_load(tr.template(page))
    assert data["units"]["md:title:1"]["en"].startswith("Some text")
    data["units"]["md:title:0"]["zh"] = "# 标题"
    data["units"]["md:title:1"]["zh"] = "一些文字 {cite:p}`a2020`。"
    for unit in data["units"].values():
        unit["hash"] = "old"
    tr.store_path(page).write_text(yaml.safe_dump(data, allow_unicode=True))
    assert tr.page_status(page, tr.load_store(page)).stale == [
        "md:title:0",
        "md:title:1",
    ]
    assert tr.mark(page, []) == 2
    store = tr.load_store(page)
    st = tr.page_status(page, store)
    assert (st.missing, st.stale, st.mismatched) == ([], [], [])
    assert "en" not in store["md:title:1"]
    assert (
        tr.zh_markdown(page.read_text(), store)
        == "# 标题\n\n一些文字 {cite:p}`a2020`。\n"
    )


def test_write_tree_twice_leaves_unchanged_pages_alone(tmp_path):
    """A rebuild re-reads only what changed: the tree is not rewritten wholesale."""
    out = tmp_path / "zh_src"
    counts = tr.write_tree(out, build=tmp_path)
    assert counts["translated"] == len(TRANSLATED) and counts.get("stale", 0) >= 0
    intro = out / "book" / "intro.md"
    before = intro.stat().st_mtime_ns
    (out / "book" / "gone.md").write_text("# an old page\n")
    tr.write_tree(out, build=tmp_path)
    assert intro.stat().st_mtime_ns == before
    assert not (out / "book" / "gone.md").exists()
    assert (out / "tools").resolve() == ROOT / "tools"
    for page in set(tr.toc_pages()) - set(TRANSLATED):  # built in English, marked
        text = (out / "book" / tr.page_file(page).name).read_text()
        assert tr.UNTRANSLATED_NOTE in text
