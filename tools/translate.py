"""The Simplified Chinese edition: translation store, consistency checks, zh tree.

    python tools/translate.py check           # missing units / mismatched references
    python tools/translate.py template PAGE   # PAGE's units with their English text
    python tools/translate.py mark PAGE [ID]  # record the English hash (after review)
    python tools/translate.py tree            # write the zh source tree (_build/zh_src)
    python tools/translate.py build [-W]      # tree + jupyter-book -> _build/html/zh

The store is one YAML file per translated page, ``book/zh/<stem>.yml``: for every
*unit* of the English page (a markdown cell by its id, a code cell's figure caption or
alt text, a block of a ``.md`` page) the SHA-256 prefix of the English text it was
translated from and the Chinese text. Code cells are copied unchanged, so a Chinese
notebook has the English notebook's code and hits the same execution cache
(jupyter-cache matches a notebook by the hash of its code cells): the Chinese pages show
the numbers of the English build and never execute code (``build`` stops if a notebook
is not in the cache).

A unit whose English text changed since it was translated is *stale*: the page shows
:data:`STALE_NOTE` and ``check``/``build`` print the count. A unit with no translation
(*missing*) or a translation whose ``{glue}`` references, ``{cite}`` keys,
``{doc}``/``{ref}``/``{numref}`` targets, math or figure names differ from its English
source (*mismatched*) fails ``check``. Pages without a store file are "not yet
translated": the Chinese edition leaves them out of its table of contents and builds
them in English behind :data:`UNTRANSLATED_NOTE`, so links and cross-page glue resolve.

To translate a page: ``template book/X.ipynb > book/zh/X.yml``, write each ``zh:``
(terms: ``book/zh/glossary.md``), then ``mark book/X.ipynb`` (records the hashes and
drops the English). After revising a stale unit, ``mark book/X.ipynb UNIT_ID``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "book" / "zh"
GLOSSARY = STORE / "glossary.md"  # a page of the Chinese edition only
GLOSSARY_PAGE = "book/glossary"
BUILD = ROOT / "_build"
STALE_NOTE = "本节译文可能落后于英文原文。"
UNTRANSLATED_NOTE = "本页尚未译成中文，以下是英文原文。"
TITLE_ZH = "Transformer 为什么用 LayerNorm 而不用 BatchNorm"
CAPTIONS_ZH = {
    "Background": "背景",
    "The four claims": "四个论断",
    "Beyond the claims": "论断之外",
    "Conclusions": "结论",
}
# directives whose block on a .md page has no text to translate
VERBATIM = ("evidence-ledger", "nb-exec-table", "seed-sweep-table", "bibliography")
# files the zh tree links to instead of copying (relative to the repository root)
LINKED = ("tools", "src", "_static", "book/_ext", "book/data", "book/references.bib")


@dataclass(frozen=True)
class Unit:
    """One translatable piece of an English page."""

    id: str  # "md:<cell id>", "caption:<cell id>", "alt:<cell id>", "md:<section>:<n>"
    text: str


def text_hash(text: str) -> str:
    """The store's hash of an English unit: SHA-256 of the stripped text, 12 hex."""
    return hashlib.sha256(text.strip().encode()).hexdigest()[:12]


# --- units of a page ----------------------------------------------------------------

FENCE = re.compile(r"^\s*(`{3,}|:{3,})")
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def md_blocks(text: str) -> list[str]:
    """Blank-line separated blocks of a MyST page; a fenced directive stays whole."""
    blocks, cur, fence = [], [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
        elif (
            fence is not None
            and m
            and m.group(1) == fence
            and not line.strip()[len(fence) :].strip()
        ):
            fence = None
        if fence is None and not line.strip():
            if cur:
                blocks.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    if cur:
        blocks.append("\n".join(cur))
    return blocks


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-") or "top"


def _verbatim(block: str) -> bool:
    m = re.match(r"^\s*(`{3,}|:{3,})\{([\w-]+)\}", block)
    return bool(m) and m.group(2) in VERBATIM


def md_units(text: str) -> list[tuple[str | None, str]]:
    """``(unit id or None for a verbatim block, block)`` for every block of a page."""
    out, section, n = [], "top", 0
    for block in md_blocks(text):
        m = HEADING.match(block)
        if m:
            section, n = _slug(m.group(2)), 0
        out.append((None if _verbatim(block) else f"md:{section}:{n}", block))
        n += 1
    return out


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def nb_units(nb: dict) -> list[Unit]:
    """Markdown cells, then each code cell's figure caption and alt text, by cell id."""
    out = []
    for cell in nb["cells"]:
        cid = cell.get("id")
        if not cid:
            raise ValueError("expected every cell to have an id (nbformat >= 4.5)")
        if cell["cell_type"] == "markdown":
            out.append(Unit(f"md:{cid}", _source(cell)))
        meta = cell.get("metadata", {}).get("mystnb", {})
        caption = meta.get("figure", {}).get("caption")
        alt = meta.get("image", {}).get("alt")
        if caption:
            out.append(Unit(f"caption:{cid}", caption))
        if alt:
            out.append(Unit(f"alt:{cid}", alt))
    return out


def page_units(path: Path) -> list[Unit]:
    """The translatable units of an English page (``.ipynb`` or ``.md``)."""
    if path.suffix == ".ipynb":
        return nb_units(json.loads(path.read_text()))
    if path.suffix == ".md":
        return [Unit(u, b) for u, b in md_units(path.read_text()) if u]
    raise ValueError(f"expected a .ipynb or .md page, got {path}")


# --- references that a translation must keep ------------------------------------------

ROLE = re.compile(r"\{([a-z][\w:-]*)\}`([^`]*)`")
DIRECTIVE = re.compile(r"^\s*(?:`{3,}|:{3,})\{([\w:-]+)\}[ \t]*(.*)$", re.M)
DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.S)
INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)((?:[^$\n]|\n(?!\s*\n))+?)(?<!\\)\$")
NAME = re.compile(r"^\s*:name:\s*(\S+)", re.M)
LABEL = re.compile(r"^\(([\w.:-]+)\)=\s*$", re.M)
XREF_ROLES = {"doc", "ref", "numref", "eq"}


def _target(content: str) -> str:
    m = re.search(r"<([^<>]+)>\s*$", content)
    return (m.group(1) if m else content).strip()


def references(text: str) -> dict[str, Counter]:
    """What a translation must keep, by kind: glue, cite, xref, math, name."""
    refs = {k: Counter() for k in ("glue", "cite", "xref", "math", "name")}
    for role, content in ROLE.findall(text):
        if role.startswith("glue"):
            refs["glue"][f"{role}`{content}`"] += 1
        elif role.startswith("cite"):
            refs["cite"].update(k.strip() for k in content.split(","))
        elif role in XREF_ROLES:
            refs["xref"][f"{role}:{_target(content)}"] += 1
        elif role == "math":
            refs["math"][" ".join(content.split())] += 1
    for name, arg in DIRECTIVE.findall(text):
        if name.startswith("glue"):
            refs["glue"][f"{name} {arg.strip()}"] += 1
    no_display = DISPLAY_MATH.sub(" ", text)
    for body in DISPLAY_MATH.findall(text) + INLINE_MATH.findall(no_display):
        refs["math"][" ".join(body.split())] += 1
    refs["name"].update(NAME.findall(text) + LABEL.findall(text))
    return refs


def mismatches(en: str, zh: str) -> list[str]:
    """How ``zh`` differs from ``en`` in references (empty when they agree)."""
    a, b = references(en), references(zh)
    out = []
    for kind in a:
        lost, added = a[kind] - b[kind], b[kind] - a[kind]
        if lost or added:
            out.append(f"{kind}: missing {sorted(lost)}, extra {sorted(added)}")
    return out


# --- the store ------------------------------------------------------------------------


def store_path(page: Path) -> Path:
    return STORE / f"{page.stem}.yml"


def load_store(page: Path) -> dict | None:
    """``{unit id: {"hash": ..., "zh": ...}}`` of a page, or None if not translated."""
    path = store_path(page)
    if not path.exists():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    units = data.get("units") or {}
    if not isinstance(units, dict):
        raise ValueError(f"{path}: expected 'units' to be a mapping, got {type(units)}")
    return units


@dataclass
class Status:
    page: str
    missing: list[str]
    stale: list[str]
    mismatched: list[str]
    unused: list[str]


def page_status(page: Path, store: dict) -> Status:
    """Missing, stale, mismatched and unused units of one translated page."""
    st = Status(page.name, [], [], [], [])
    units = page_units(page)
    for u in units:
        entry = store.get(u.id) or {}
        zh = entry.get("zh")
        if not zh or not str(zh).strip():
            st.missing.append(u.id)
            continue
        if entry.get("hash") != text_hash(u.text):
            st.stale.append(u.id)
        st.mismatched += [f"{u.id}: {m}" for m in mismatches(u.text, str(zh))]
    st.unused = sorted(set(store) - {u.id for u in units})
    return st


def toc_pages(root: Path = ROOT) -> list[str]:
    """Every page of the English book (``book/x``, no suffix) in _toc.yml order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())

    def walk(entries):
        for e in entries:
            if "file" in e:
                yield e["file"]
            yield from walk(e.get("sections", []))

    return [toc["root"]] + [
        f for part in toc.get("parts", []) for f in walk(part.get("chapters", []))
    ]


def page_file(page: str, root: Path = ROOT) -> Path:
    for suffix in (".ipynb", ".md"):
        if (root / f"{page}{suffix}").exists():
            return root / f"{page}{suffix}"
    raise FileNotFoundError(f"expected {page}.ipynb or {page}.md under {root}")


def translated_pages(root: Path = ROOT) -> list[str]:
    return [p for p in toc_pages(root) if store_path(Path(p)).exists()]


def check_all(log=print) -> tuple[int, int]:
    """Print every problem; return ``(failures, stale units)``."""
    failures = stale = 0
    for page in toc_pages():
        path = page_file(page)
        store = load_store(path)
        if store is None:
            log(f"zh: {path.name}: not yet translated")
            continue
        st = page_status(path, store)
        stale += len(st.stale)
        failures += len(st.missing) + len(st.mismatched)
        for uid in st.missing:
            log(f"zh: {path.name}: MISSING translation of {uid}")
        for m in st.mismatched:
            log(f"zh: {path.name}: MISMATCHED {m}")
        for uid in st.stale:
            log(f"zh: {path.name}: stale {uid} (English changed since translation)")
        for uid in st.unused:
            log(f"zh: {path.name}: unused store entry {uid} (no such unit now)")
    return failures, stale


# --- writing the Chinese pages --------------------------------------------------------


def with_note(text: str, note: str) -> str:
    """``text`` with ``note`` after its first heading line (or first when none)."""
    lines = text.split("\n")
    if lines and HEADING.match(lines[0]):
        return "\n".join([lines[0], "", note, ""] + lines[1:])
    return f"{note}\n\n{text}"


CJK = re.compile("[\u3000-\u30ff\u4e00-\u9fff\uff00-\uffef]")


OPTION_LINE = re.compile(r"^\s*:[\w-]+:")  # a directive option, e.g. ":alt: ..."


def cjk_join(text: str) -> str:
    """Join a line break between two Chinese characters (HTML would show a space);
    a heading line and a directive's option line (``:alt: ...``) stay on their own."""
    out: list[str] = []
    for line in text.split("\n"):
        rest = line.lstrip(" \t")
        prev = out[-1] if out else ""
        if (
            rest
            and prev
            and CJK.match(rest[0])
            and CJK.match(prev[-1])
            and not prev.lstrip().startswith("#")
            and not OPTION_LINE.match(prev)
        ):
            out[-1] = prev + rest
        else:
            out.append(line)
    return "\n".join(out)


def _zh(store: dict, unit: Unit) -> str:
    entry = store[unit.id]
    zh = cjk_join(str(entry["zh"]).rstrip("\n"))
    if entry.get("hash") != text_hash(unit.text):
        if unit.id.startswith(("caption:", "alt:")):
            return f"{zh}（{STALE_NOTE}）"
        return with_note(zh, f"*{STALE_NOTE}*")
    return zh


FIGURES_KEY = "lnbn_zh_figures"  # notebook metadata: [[English, Chinese], ...]


def zh_notebook(nb: dict, store: dict) -> dict:
    """The Chinese notebook: translated markdown; code cells untouched, metadata too.

    jupyter-cache hashes code cells with their metadata, so the translated figure
    captions and alt texts go into the notebook's metadata (not hashed) as
    ``[English, Chinese]`` pairs; ``tools/book_ext.py`` swaps them in when it reads
    the page.
    """
    out = copy.deepcopy(nb)
    figures = []
    for cell in out["cells"]:
        cid = cell["id"]
        if cell["cell_type"] == "markdown":
            cell["source"] = _zh(store, Unit(f"md:{cid}", _source(cell)))
        meta = cell.get("metadata", {}).get("mystnb", {})
        for kind, text in (
            ("caption", meta.get("figure", {}).get("caption")),
            ("alt", meta.get("image", {}).get("alt")),
        ):
            if text:
                figures.append([text, _zh(store, Unit(f"{kind}:{cid}", text))])
    out["metadata"][FIGURES_KEY] = figures
    return out


def swap_figure_texts(nb: dict) -> dict:
    """Put the translated captions and alt texts into the code cells' metadata (for
    a reader copy, which no cache matches), and drop the pairs."""
    zh = dict(nb.get("metadata", {}).pop(FIGURES_KEY, []))
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("mystnb", {})
        for part, key in (("figure", "caption"), ("image", "alt")):
            text = meta.get(part, {}).get(key)
            if text in zh:
                meta[part][key] = zh[text]
    return nb


def zh_markdown(text: str, store: dict) -> str:
    blocks = [
        b if uid is None else _zh(store, Unit(uid, b)) for uid, b in md_units(text)
    ]
    return "\n\n".join(blocks) + "\n"


def untranslated(path: Path) -> str:
    """The English page, marked as not yet translated and as an orphan (not in toc)."""
    note = f":::{{note}}\n{UNTRANSLATED_NOTE}\n:::"
    if path.suffix == ".md":
        return "---\norphan: true\n---\n\n" + with_note(path.read_text(), note)
    nb = json.loads(path.read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    first["source"] = with_note(_source(first), note)
    nb["metadata"]["orphan"] = True
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def zh_toc(root: Path = ROOT) -> dict:
    """The English table of contents with only translated pages, captions in Chinese."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    done = set(translated_pages(root))

    def keep(entries):
        out = []
        for e in entries:
            if e.get("file") in done:
                e = dict(e)
                if "sections" in e:
                    e["sections"] = keep(e["sections"])
                    if not e["sections"]:
                        del e["sections"]
                out.append(e)
        return out

    parts = []
    for part in toc.get("parts", []):
        chapters = keep(part.get("chapters", []))
        if chapters:
            caption = part.get("caption", "")
            new = {**part, "chapters": chapters}
            new["caption"] = CAPTIONS_ZH.get(caption, caption)
            if chapters != part.get("chapters"):
                new.pop("numbered", None)  # numbers would not match the English
            parts.append(new)
    glossary = {"caption": "中文版", "chapters": [{"file": GLOSSARY_PAGE}]}
    return {**toc, "parts": parts + [glossary]}


def zh_config(root: Path = ROOT, build: Path = BUILD) -> dict:
    """_config.yml for the Chinese edition: title, language, the shared cache."""
    cfg = yaml.safe_load((root / "_config.yml").read_text())
    cfg["title"] = TITLE_ZH
    cfg["only_build_toc_files"] = False  # untranslated pages are built as orphans
    cfg["execute"]["cache"] = str((build / ".jupyter_cache").resolve())
    html = cfg.setdefault("html", {})
    html["use_edit_page_button"] = False  # the source of a page is its store file
    if html.get("baseurl"):
        html["baseurl"] = html["baseurl"].rstrip("/") + "/zh/"
    sphinx = cfg.setdefault("sphinx", {}).setdefault("config", {})
    sphinx["language"] = "zh_CN"
    sphinx["html_search_language"] = "zh"
    return cfg


def _write(path: Path, text: str, written: set[Path]) -> None:
    """Write ``text`` unless ``path`` holds it already (Sphinx then skips the page)."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    written.add(path)


def write_tree(out: Path, root: Path = ROOT, build: Path = BUILD) -> dict[str, int]:
    """Write the zh source tree (unchanged files untouched, so a rebuild only
    re-reads what changed); return counts of pages and units."""
    (out / "book").mkdir(parents=True, exist_ok=True)
    for rel in LINKED:
        link = out / rel
        if not link.is_symlink() or link.readlink() != root / rel:
            if link.is_symlink() or link.is_file():
                link.unlink()
            elif link.exists():
                shutil.rmtree(link)
            link.symlink_to(root / rel)
    written: set[Path] = set()
    for src, dst in (
        (root / "book" / "logo.svg", out / "book" / "logo.svg"),
        (root / "book" / "zh" / "glossary.md", out / f"{GLOSSARY_PAGE}.md"),
    ):
        _write(dst, src.read_text(), written)
    counts = Counter()
    for page in toc_pages(root):
        path = page_file(page, root)
        store = load_store(path)
        target = out / "book" / path.name
        if store is None:
            _write(target, untranslated(path), written)
            counts["untranslated"] += 1
            continue
        st = page_status(path, store)
        if st.missing:
            raise SystemExit(f"zh: {path.name}: missing {st.missing}")
        counts["translated"] += 1
        counts["units"] += len(page_units(path))
        counts["stale"] += len(st.stale)
        if path.suffix == ".ipynb":
            nb = zh_notebook(json.loads(path.read_text()), store)
            text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        else:
            text = zh_markdown(path.read_text(), store)
        _write(target, text, written)
    for old in (out / "book").iterdir():  # pages that no longer exist
        if old.is_file() and not old.is_symlink() and old not in written:
            old.unlink()
    dump = dict(allow_unicode=True, sort_keys=False)
    _write(out / "_toc.yml", yaml.safe_dump(zh_toc(root), **dump), written)
    cfg = yaml.safe_dump(zh_config(root, build), **dump)
    _write(out / "_config.yml", cfg, written)
    return dict(counts)


def zh_chapter_titles(root: Path = ROOT) -> list[str]:
    """The Chinese titles of the translated notebooks, in table-of-contents order."""
    titles = []
    for page in translated_pages(root):
        path = page_file(page, root)
        if path.suffix == ".ipynb":
            first = page_units(path)[0]
            zh = str(load_store(path)[first.id]["zh"])
            titles.append(zh.splitlines()[0].lstrip("# ").strip())
    return titles


def uncached(tree: Path, cache_dir: Path) -> list[str]:
    """Notebooks of the zh tree whose code is not in the execution cache."""
    import nbformat
    from jupyter_cache import get_cache

    cache = get_cache(str(cache_dir))
    out = []
    for nb_path in sorted((tree / "book").glob("*.ipynb")):
        try:
            cache.match_cache_notebook(nbformat.read(nb_path, as_version=4))
        except KeyError:
            out.append(nb_path.name)
    return out


def build(strict: bool, builder: str = "html") -> int:
    """Write the tree, check the cache, build, copy the HTML to ``_build/html/zh``."""
    start = time.perf_counter()
    failures, _ = check_all(log=lambda m: None if "not yet" in m else print(m))
    if failures:
        print(f"zh: {failures} missing or mismatched units")
        return 1
    tree, out = BUILD / "zh_src", BUILD / "zh"
    counts = write_tree(tree)
    missing = uncached(tree, BUILD / ".jupyter_cache")
    if missing:
        print(
            "zh: not in the execution cache (build the English book first; the "
            f"Chinese edition never executes code): {', '.join(missing)}"
        )
        return 1
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(tree), "--path-output", str(out)]
    cmd += ["--builder", builder] + (["-W", "--keep-going"] if strict else [])
    rc = subprocess.run(cmd).returncode
    if rc == 0 and builder == "html":
        target = BUILD / "html" / "zh"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(out / "_build" / "html", target)
    print(
        f"zh: {counts.get('translated', 0)} pages translated "
        f"({counts.get('untranslated', 0)} not yet), {counts.get('units', 0)} units, "
        f"{counts.get('stale', 0)} stale; built in {time.perf_counter() - start:.0f} s"
    )
    return rc


# --- translator's helpers -------------------------------------------------------------


def template(path: Path) -> str:
    """A store skeleton for ``path``: each unit's hash, English text, zh to fill."""
    store = load_store(path) or {}
    units = {}
    for u in page_units(path):
        units[u.id] = {
            "hash": text_hash(u.text),
            "en": u.text,
            "zh": (store.get(u.id) or {}).get("zh", ""),
        }
    return yaml.safe_dump({"units": units}, allow_unicode=True, sort_keys=False)


def mark(path: Path, ids: list[str]) -> int:
    """Record the current English hash of ``ids`` (all units when empty)."""
    store = load_store(path)
    if store is None:
        raise SystemExit(f"{store_path(path)} does not exist")
    n = 0
    for u in page_units(path):
        if (not ids or u.id in ids) and u.id in store:
            store[u.id]["hash"] = text_hash(u.text)
            n += 1
    save(path, store)
    return n


class _Literal(yaml.SafeDumper):
    pass


def _str(dumper, s):
    style = "|" if "\n" in s else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


_Literal.add_representer(str, _str)


def save(path: Path, store: dict) -> None:
    """Write a page's store in unit order, multi-line text as YAML literal blocks."""
    order = [u.id for u in page_units(path)]
    ids = [k for k in order if k in store] + sorted(set(store) - set(order))
    units = {k: {"hash": store[k].get("hash", ""), "zh": store[k]["zh"]} for k in ids}
    text = yaml.dump(
        {"page": f"book/{path.name}", "units": units},
        Dumper=_Literal,
        allow_unicode=True,
        sort_keys=False,
        width=1000,
    )
    store_path(path).write_text(text)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check")
    sub.add_parser("template").add_argument("page", type=Path)
    m = sub.add_parser("mark")
    m.add_argument("page", type=Path)
    m.add_argument("ids", nargs="*")
    sub.add_parser("tree")
    b = sub.add_parser("build")
    b.add_argument("-W", dest="strict", action="store_true", help="warnings fail")
    b.add_argument("--builder", default="html")
    args = ap.parse_args(argv)
    if args.cmd == "check":
        failures, stale = check_all()
        print(f"zh: {failures} missing or mismatched units, {stale} stale")
        return 1 if failures else 0
    if args.cmd == "template":
        print(template(args.page))
    elif args.cmd == "mark":
        print(f"{mark(args.page, args.ids)} units marked current")
    elif args.cmd == "tree":
        print(write_tree(BUILD / "zh_src"))
    elif args.cmd == "build":
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        return build(args.strict, args.builder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
