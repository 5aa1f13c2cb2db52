"""Reader copies of the chapters: executed notebooks that read like the online book.

    jupyter-book build .                      # first: executes every chapter
    python tools/reader_notebooks.py          # then: writes _build/reader/book/*.ipynb
    python tools/reader_notebooks.py --check _build/reader/book/*.ipynb

The committed notebooks carry MyST syntax that only the book build understands:
``{glue:text}`name:.2f``` for a measured number, ``{cite:p}`key``` for a citation,
``{doc}``/``{numref}`` cross-references. Opened raw on Colab or from a download, that
shows as literal text. This tool takes the notebook myst-nb executed for the build
(from its jupyter-cache, ``_build/.jupyter_cache``, with its outputs and figures) and
writes a reader copy in which

* glue roles are the values this build measured, formatted as the book formats them;
* citations are "(Author, Year)", linked to the DOI/URL of the entry, or to the online
  bibliography; cross-references are links into the online book;
* MyST-only markup (labels, directive fences) is plain Markdown;
* the hidden install cell names the repository the book is published from and the
  exact commit that built the page (``tools/site_config.py``), so a reader on Colab,
  Kaggle or Binder runs the same library code the page shows;
* the glue records, invisible outside the book, and stderr warnings are dropped.

It then serves these copies from the book: the download button's file
(``_build/html/_sources/book/X.ipynb``) is replaced by the reader copy, and every
page's Colab button points at the ``notebooks`` branch, where the Pages workflow
publishes ``_build/reader`` (Colab opens notebooks from GitHub only).

``--check`` fails on a reader copy with raw MyST left in its Markdown or without
outputs; the export runs it on everything it writes.
"""

from __future__ import annotations

import argparse
import ast
import codecs
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nbtool  # noqa: E402
import site_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
READER_NOTE_TAG = "reader-note"

ROLE = re.compile(r"\{([A-Za-z][\w:+-]*)\}`([^`]*)`")
FENCE = re.compile(r"^(\s*)(`{3,}|:{3,})\{([\w:-]+)\}[ \t]*(.*)$")
LABEL_LINE = re.compile(r"^\([\w.:-]+\)=\s*$")
EQ_LABEL = re.compile(r"(\$\$)[ \t]*\(([\w.:-]+)\)[ \t]*$", re.M)
ADMONITIONS = {
    "note",
    "warning",
    "tip",
    "important",
    "hint",
    "caution",
    "attention",
    "danger",
    "error",
    "seealso",
    "admonition",
    "dropdown",
}


# --- citations ----------------------------------------------------------------------


def _latex(s: str) -> str:
    import latexcodec  # noqa: F401  (registers the codec)

    return codecs.decode(s, "ulatex").replace("{", "").replace("}", "")


class Bibliography:
    """Author-year labels and links for the entries of the book's .bib files."""

    def __init__(self, paths: list[Path], fallback: str):
        from pybtex.database import parse_file

        self.entries = {}
        for p in paths:
            self.entries.update(parse_file(str(p)).entries)
        self.fallback = fallback  # the online bibliography page ("" when not published)

    def authors(self, key: str) -> str:
        e = self.entries[key]
        people = e.persons.get("author") or e.persons.get("editor") or []
        names = [_latex(" ".join(p.prelast_names + p.last_names)) for p in people]
        if not names:
            return _latex(e.fields.get("institution", e.fields.get("title", key)))
        if len(names) == 1:
            return names[0]
        if len(names) == 2:
            return f"{names[0]} and {names[1]}"
        return f"{names[0]} et al."

    def year(self, key: str) -> str:
        return self.entries[key].fields.get("year", "n.d.")

    def link(self, key: str) -> str:
        f = self.entries[key].fields
        if f.get("doi"):
            return "https://doi.org/" + f["doi"]
        if f.get("url"):
            return f["url"]
        if (
            f.get("eprint")
            and f.get("archiveprefix", f.get("eprinttype", "")).lower() == "arxiv"
        ):
            return "https://arxiv.org/abs/" + f["eprint"]
        return self.fallback

    def cite(self, role: str, keys: str) -> str:
        keys_ = [k.strip() for k in keys.split(",") if k.strip()]
        missing = [k for k in keys_ if k not in self.entries]
        if missing:
            raise KeyError(f"citation keys not in the bibliography: {missing}")

        def one(k: str, text: str) -> str:
            url = self.link(k)
            return f"[{text}]({url})" if url else text

        if role.endswith(":t"):  # "Ba et al. (2016)"
            return "; ".join(
                one(k, f"{self.authors(k)} ({self.year(k)})") for k in keys_
            )
        return (
            "("
            + "; ".join(one(k, f"{self.authors(k)}, {self.year(k)}") for k in keys_)
            + ")"
        )


# --- cross-references into the online book -------------------------------------------


class Site:
    """Titles, figure numbers and equation numbers read from the built HTML."""

    def __init__(self, html: Path, base: str):
        self.html, self.base = html, base
        self.anchors: dict[str, tuple[str, str]] = {}  # id -> (page, display text)
        for page in sorted(html.rglob("*.html")):
            rel = page.relative_to(html).as_posix()
            if rel.startswith(("_", "genindex", "search", "zh/")):
                continue
            text = page.read_text(errors="replace")
            for m in re.finditer(
                r'<(figure|section|div|span|table)([^>]*)\bid="([^"]+)"', text
            ):
                tag, attrs, ident = m.groups()
                chunk = text[m.end() : m.end() + 4000]
                heading = re.search(
                    r"<h\d[^>]*>(.*?)<a class=\"headerlink\"", chunk, re.S
                )
                shown = ident
                if tag in ("figure", "table"):
                    n = re.search(r'class="caption-number">([^<]+)<', chunk)
                    shown = n.group(1).strip() if n else ident
                elif tag == "div" and "math" in attrs:  # a labelled equation
                    n = re.search(r'class="eqno">\(([^)]+)\)', chunk[:1500])
                    shown = f"({n.group(1)})" if n else ident
                elif heading and (tag == "section" or heading.start() < 300):
                    # a section, or a MyST label target (an empty span) just before one
                    shown = re.sub(r"<[^>]+>", "", heading.group(1)).strip()
                self.anchors.setdefault(ident, (rel, shown))

    def url(self, page: str, anchor: str = "") -> str:
        if not self.base:
            return ""
        return self.base + page + (f"#{anchor}" if anchor else "")

    def title(self, page: str) -> str:
        p = self.html / page
        m = (
            re.search(r"<title>(.*?)( &#8212;| —|</title>)", p.read_text())
            if p.exists()
            else None
        )
        return re.sub(r"<[^>]+>", "", m.group(1)).strip() if m else page


def _link(text: str, url: str) -> str:
    return f"[{text}]({url})" if url else text


def _split_explicit(content: str) -> tuple[str | None, str]:
    m = re.match(r"^(.*?)\s*<([^>]+)>$", content, re.S)
    return (m.group(1), m.group(2)) if m else (None, content)


# --- the Markdown rewrite -------------------------------------------------------------


def literal_include(path: Path, options: dict[str, str]) -> list[str]:
    """A fenced code block of ``path`` (or of its ``:pyobject:``), as the book shows."""
    text = path.read_text()
    lines = text.splitlines()
    if "pyobject" in options:
        node = ast.parse(text)
        for part in options["pyobject"].split("."):
            node = next(
                n
                for n in ast.iter_child_nodes(node)
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and n.name == part
            )
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        lines = lines[first - 1 : node.end_lineno]
    language = options.get("language", "python" if path.suffix == ".py" else "")
    return [f"```{language}", *lines, "```"]


class Rewriter:
    def __init__(
        self,
        glue: dict[str, dict],
        glue_of,
        bib: Bibliography,
        site: Site,
        page: str,
        keep_going: bool = False,
    ):
        self.glue, self.glue_of, self.bib, self.site, self.page = (
            glue,
            glue_of,
            bib,
            site,
            page,
        )
        self.keep_going, self.errors = keep_going, []
        self.attachments: dict[str, dict] = {}  # images of the cell being rewritten

    def glue_text(self, role: str, content: str) -> str:
        from myst_nb.core.variables import (
            format_plain_text,
        )  # the book's own formatting

        key, fmt = content, ""
        if role == "glue:text":
            key, _, fmt = (
                content.rpartition(":")
                if ":" in content.split("::")[-1]
                else (content, "", "")
            )
        doc, _, name = key.rpartition("::")
        store = self.glue_of(doc) if doc else self.glue
        if name not in store:
            raise KeyError(
                f"{self.page}: glue name {name!r} not glued by the executed notebook"
            )
        data = store[name]["data"]
        if "image/png" in data and role == "glue":
            raise KeyError(
                f"{self.page}: {name!r} is a figure glued inline: show it with a "
                "{glue:figure} directive (with :alt: and a caption)"
            )
        if role == "glue:md" and "text/markdown" in data:
            return data["text/markdown"]
        if "text/plain" not in data:
            raise KeyError(f"{self.page}: glue {name!r} has no text/plain to paste")
        text = format_plain_text(
            data["text/plain"], fmt or ("s" if role == "glue:text" else "")
        )
        return f"${text}$" if role == "glue:math" else text

    def role(self, m: re.Match) -> str:
        try:
            return self._role(m)
        except KeyError as exc:
            if not self.keep_going:
                raise
            self.errors.append(str(exc.args[0]))
            return f"**[{m.group(0)}: {exc.args[0]}]**"

    def _role(self, m: re.Match) -> str:
        role, content = m.group(1), m.group(2)
        if role.startswith("glue"):
            return self.glue_text(role if role != "glue:" else "glue", content)
        if role.startswith("cite"):
            return self.bib.cite(role, content)
        if role == "math":
            return f"${content}$"
        text, target = _split_explicit(content)
        if role == "doc":
            page = (Path(self.page).parent / target).as_posix()
            page = re.sub(r"\.(ipynb|md)$", "", page) + ".html"
            return _link(text or self.site.title(page), self.site.url(page))
        if role in ("ref", "numref", "eq", "any"):
            found = self.site.anchors.get(target)
            if found is None:  # a labelled $$ equation's id is "equation-<label>"
                target = f"equation-{target}"
                found = self.site.anchors.get(target)
            if not found:
                raise KeyError(f"{self.page}: no anchor {target!r} in the built book")
            page, shown = found
            if role == "numref" and text and "%s" in text:
                shown = text.replace("%s", re.sub(r"^\D+", "", shown))
            elif text:
                shown = text
            return _link(shown, self.site.url(page, target))
        if role in ("abbr", "sub", "sup", "kbd", "code", "term", "index"):
            return text or re.sub(r"\s*\(.*\)$", "", content)
        return m.group(0)  # unknown: left as is, and --check reports it

    def fences(self, lines: list[str]) -> list[str]:
        out, i = [], 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not m:
                out.append(lines[i])
                i += 1
                continue
            indent, marker, name, args = m.groups()
            j, body = i + 1, []
            while j < len(lines) and lines[j].strip() != marker:
                body.append(lines[j])
                j += 1
            options = dict(
                re.match(r"^\s*:([\w-]+):\s*(.*)$", b).groups()
                for b in body
                if re.match(r"^\s*:[\w-]+:", b)
            )
            body = [
                b for b in body if not re.match(r"^\s*:[\w-]+:", b)
            ]  # directive options
            body = self.fences(body)
            if name == "literalinclude":
                path = ROOT / Path(self.page).parent / args.strip()
                out.extend(f"{indent}{b}" for b in literal_include(path, options))
            elif name in ADMONITIONS:
                title = args.strip() or name.capitalize()
                out.append(f"{indent}> **{title}**")
                out.append(f"{indent}>")
                out.extend(f"{indent}> {b}".rstrip() for b in body)
            elif name == "math":
                out.extend([f"{indent}$$", *body, f"{indent}$$"])
            elif name == "glue:figure":
                figure = self.glue_figure(args.strip(), options, body)
                out.extend(f"{indent}{b}" for b in figure)
            else:
                out.extend(lines[i : j + 1])  # unknown directive: --check reports it
                i = j + 1
                continue
            i = j + 1
        return out

    def glue_figure(self, key: str, options: dict, caption: list[str]) -> list[str]:
        """A glued figure as a Markdown image attached to its cell, then its caption."""
        doc, _, name = key.rpartition("::")
        store = self.glue_of(doc) if doc else self.glue
        png = store.get(name, {}).get("data", {}).get("image/png")
        if png is None:
            self.errors.append(f"{self.page}: glue:figure {name!r} has no PNG glued")
            return caption
        self.attachments[f"{name}.png"] = {"image/png": png}
        alt = options.get("alt", name).replace("]", ")").replace("[", "(")
        text = " ".join(c.strip() for c in caption if c.strip())
        return [f"![{alt}](attachment:{name}.png)", "", f"*{text}*" if text else ""]

    def markdown(self, src: str) -> str:
        lines = [ln for ln in src.split("\n") if not LABEL_LINE.match(ln)]
        src = "\n".join(self.fences(lines))
        src = EQ_LABEL.sub(r"\1", src)
        return ROLE.sub(self.role, src)


# --- notebooks -----------------------------------------------------------------------


def executed_notebook(source: Path, cache_dir: Path) -> dict:
    """``source`` with the outputs of its cached execution (what the book rendered).

    myst-nb keeps executed notebooks in its jupyter-cache; its copies in
    ``_build/jupyter_execute`` are not reliable (a notebook restored from the cache
    is written there without outputs), so the outputs come from the cache, matched
    on the notebook's code.
    """
    import nbformat
    from jupyter_cache import get_cache

    nb = nbformat.read(source, as_version=4)
    try:
        _, merged = get_cache(str(cache_dir)).merge_match_into_notebook(nb)
    except KeyError:
        raise SystemExit(
            f"{source.name}: no execution in {cache_dir} matches its code: "
            "run `jupyter-book build .` first (a notebook that failed is not cached)"
        ) from None
    return json.loads(nbformat.writes(merged))


def glue_store(nb: dict) -> dict[str, dict]:
    """``{name: {"data": {mime: value}}}`` for every value the notebook glued."""
    store = {}
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get("scrapbook")
            if meta:
                prefix = meta.get("mime_prefix", "")
                data = {
                    k.removeprefix(prefix): v for k, v in out.get("data", {}).items()
                }
                store[meta["name"]] = {"data": data}
    return store


# Versions a reader's environment must have, beyond "installed": (module, minimum, the
# pip requirement that installs a good one, whether to install it or only say so). torch
# is never replaced (Colab's own build stays); transformers is, for the chapters that
# build Hugging Face models (the auditor needs 5.x, pyproject.toml's `audit` extra).
VERSION_CHECKS = {
    "torch": ("torch", "2.4", "", False),
    "transformers": ("transformers", "5.0", "transformers>=5.0,<6", True),
}

_VERSION_CELL = """
# Versions, not just presence: a too-old package stops here with a clear message or
# is upgraded (a Hugging Face stack older than the book's is replaced).
import re
from importlib.metadata import PackageNotFoundError, version


def _older(have, need):
    def key(v):
        return tuple(int(x) for x in re.findall(r"\\d+", v)[:2])

    return key(have) < key(need)


for _mod, _need, _pip, _install in CHECKS:
    try:
        _have = version(_mod)
    except PackageNotFoundError:
        continue  # installed later by its own cell where the chapter needs it
    if _older(_have, _need) and _install:
        print(f"{_mod} {_have} is older than {_need}: installing {_pip}")
        %pip install -q "{_pip}"
    elif _older(_have, _need):
        raise ImportError(f"this chapter needs {_mod} >= {_need}; found {_have}")
"""


def install_source(repo: str, commit: str, needs: tuple[str, ...] = ()) -> str:
    """The install cell of a reader copy: the repository and commit filled in, then
    a version check of ``needs`` (keys of VERSION_CHECKS)."""
    src = nbtool.colab_cell_source()
    src = re.sub(r'^REPO = ""', f'REPO = "{repo}"', src, count=1, flags=re.M)
    src = re.sub(r'^COMMIT = ""', f'COMMIT = "{commit}"', src, count=1, flags=re.M)
    checks = [VERSION_CHECKS[n] for n in ("torch", *needs) if n in VERSION_CHECKS]
    return src + f"\nCHECKS = {checks!r}" + _VERSION_CELL.rstrip()


def needs(nb: dict) -> tuple[str, ...]:
    """The packages of VERSION_CHECKS a notebook's code imports."""
    code = "\n".join(
        "".join(c.get("source", "")) for c in nb["cells"] if c["cell_type"] == "code"
    )
    return tuple(
        n for n in VERSION_CHECKS if re.search(rf"\b(import|from) {n}\b", code)
    )


def reader_copy(
    executed: dict, rewriter: Rewriter, repo: str, commit: str, note: str
) -> dict:
    nb = json.loads(json.dumps(executed))
    required = needs(nb)
    cells = []
    for cell in nb["cells"]:
        src = "".join(cell.get("source", ""))
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] == "markdown":
            rewriter.attachments = {}
            cell["source"] = rewriter.markdown(src)
            if rewriter.attachments:
                cell["attachments"] = rewriter.attachments
        elif cell["cell_type"] == "code":
            if nbtool.COLAB_TAG in tags:
                cell["source"], cell["outputs"], cell["execution_count"] = (
                    install_source(repo, commit, required),
                    [],
                    None,
                )
            else:
                cell["outputs"] = [
                    o
                    for o in cell.get("outputs", [])
                    if not o.get("metadata", {}).get("scrapbook")
                    and not (
                        o.get("output_type") == "stream" and o.get("name") == "stderr"
                    )
                ]
        cells.append(cell)
        if len(cells) == 1 and note:  # right under the title
            cells.append(
                {
                    "cell_type": "markdown",
                    "id": "reader-note",
                    "metadata": {"tags": [READER_NOTE_TAG]},
                    "source": note,
                }
            )
    for cell in cells:
        if isinstance(cell.get("source"), str):
            cell["source"] = cell["source"].splitlines(keepends=True)
    nb["cells"] = cells
    nb["metadata"]["kernelspec"] = dict(nbtool.KERNELSPEC)
    nb["metadata"]["colab"] = {"provenance": [], "toc_visible": True}
    return nb


def check(nb: dict, name: str = "notebook") -> list[str]:
    """Why ``nb`` is not a reader copy: raw MyST, no outputs, no install cell."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        src = "".join(cell.get("source", ""))
        if cell["cell_type"] == "markdown":
            for pat, what in (
                (r"\{glue", "a raw {glue} role"),
                (r"\{cite", "a raw {cite} role"),
                (ROLE.pattern, "a raw MyST role"),
                (r"(?m)^\s*(`{3,}|:{3,})\{", "a MyST directive"),
                (LABEL_LINE.pattern.replace("^", "(?m)^"), "a MyST label line"),
            ):
                m = re.search(pat, src)
                if m:
                    problems.append(
                        f"{name}: cell {i}: {what}: "
                        f"{src[max(0, m.start() - 30) : m.end() + 40]!r}"
                    )
                    break
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    install = [
        c for c in code if nbtool.COLAB_TAG in c.get("metadata", {}).get("tags", [])
    ]
    if len(install) != 1:
        problems.append(
            f"{name}: expected one install cell (tag {nbtool.COLAB_TAG!r}), "
            f"found {len(install)}"
        )
    ran = [c for c in code if c not in install]
    if not ran or any(
        c.get("execution_count") is None for c in ran if "".join(c["source"]).strip()
    ):
        problems.append(f"{name}: not executed (a code cell has no execution count)")
    if not any(c.get("outputs") for c in ran):
        problems.append(f"{name}: no outputs at all")
    return problems


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


NOTE_ZH = (
    "*本笔记本是{book}《{title}》中文版的一章，于构建本书时执行（{when}，提交 "
    "`{commit}`）：下面的输出来自那次构建。要自己运行，请运行全部单元格；第一个代码单元格"
    "会在缺少时安装本书的库 `lnbn_utils`，并检查 torch 和 transformers 的版本。"
    "*全部运行*之后，代码单元格的输出是你自己运行的结果，但正文中的数字仍是构建时的数字"
    "（正文在构建本书时已填入）。*"
)


def export(
    build: Path,
    commit: str,
    colab: bool = True,
    keep_going: bool = False,
    lang: str = "en",
) -> list[Path]:
    """Write the reader copies; ``lang="zh"``: of the Chinese edition's translated
    chapters (``tools/translate.py build`` first), into ``_build/reader/zh``."""
    import translate

    zh = lang == "zh"
    cfg = site_config.config()
    repo, base = site_config.repository_url(cfg), site_config.base_url(cfg)
    html, cache_dir, out_dir = (
        build / "html" / ("zh" if zh else ""),
        build / ".jupyter_cache",
        build / "reader" / ("zh" if zh else ""),
    )
    src_root = build / "zh_src" if zh else ROOT
    base = base + "zh/" if zh and base else base
    if not (html / "index.html").exists():
        raise SystemExit(f"{html} has no built book: run `jupyter-book build .` first")
    bib = Bibliography(
        [ROOT / p for p in cfg.get("bibtex_bibfiles", [])],
        base and base + "book/bibliography.html",
    )
    site = Site(html, base)
    stores: dict[str, dict] = {}

    def glue_of(
        doc: str,
    ) -> dict:  # another chapter's glue: {glue:text}`02_x.ipynb::name`
        name = Path(doc).with_suffix(".ipynb").name
        if name not in stores:
            stores[name] = glue_store(
                executed_notebook(ROOT / "book" / name, cache_dir)
            )
        return stores[name]

    shutil.rmtree(out_dir, ignore_errors=True)
    written, problems = [], []
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    for name, _title in site_config.chapters():  # the notebooks the book builds
        if zh and not translate.store_path(Path(name)).exists():
            continue  # not yet translated
        source = src_root / name
        executed = executed_notebook(source, cache_dir)
        stores[f"{source.stem}.ipynb"] = glue_store(executed)
        page = f"book/{source.stem}.html"
        rewriter = Rewriter(
            stores[f"{source.stem}.ipynb"],
            glue_of,
            bib,
            site,
            f"book/{source.name}",
            keep_going,
        )
        book_link = _link("the online book", site.url(page)) if base else "the book"
        if zh:
            book_link = _link("在线书籍", site.url(page)) if base else "本书"
        note = (
            f'*This notebook is a chapter of {book_link} "{cfg.get("title", "")}", '
            f"executed when the book was built ({when}, commit "
            f"`{commit[:12] or 'unknown'}`): the outputs below are that build's. "
            "To run it yourself, run all cells; the first code cell installs the "
            "book's library `lnbn_utils` if it is missing and checks the versions "
            "of torch and transformers. After *Run all* the code cells' outputs are "
            "your run's, but the numbers written into the text stay the build's "
            "(the text was filled in when the book was built).*"
        )
        if zh:
            title = translate.TITLE_ZH
            note = NOTE_ZH.format(
                book=book_link, title=title, when=when, commit=commit[:12] or "unknown"
            )
        nb = reader_copy(executed, rewriter, repo, commit, note)
        if zh:
            translate.swap_figure_texts(nb)
        problems += rewriter.errors + check(nb, source.name)
        target = out_dir / "book" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        download = html / "_sources" / "book" / source.name
        download.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, download)  # what the page's download button serves
        written.append(target)
    for page in sorted((src_root / "book").glob("*.md")):
        # the download button of a text page serves its text with the numbers filled in
        src = page.read_text()
        if "{glue" not in src:
            continue
        rewriter = Rewriter({}, glue_of, bib, site, f"book/{page.name}", keep_going)
        text = rewriter.markdown(src)
        problems += rewriter.errors
        (html / "_sources" / "book" / page.name).write_text(text)
    if problems and not keep_going:
        raise SystemExit("reader notebooks with problems:\n  " + "\n  ".join(problems))
    (out_dir / "README.md").write_text(
        "# Reader notebooks\n\nExecuted copies of the chapters of "
        f'"{cfg.get("title", "")}", built from commit {commit or "unknown"} of '
        f"{repo or 'the book repository'} by `tools/reader_notebooks.py`. "
        "Generated: edits here are overwritten by the next build.\n"
    )
    _zip_all(written, html / "_downloads" / "lnbn-book-notebooks.zip")
    if colab and not zh:  # the English pass re-points every page, zh/ included
        _point_colab_at_reader_branch(html, cfg)
    if colab and zh:  # a translated chapter's Colab button opens its Chinese copy
        for target in written:
            page = html / "book" / target.with_suffix(".html").name
            text = page.read_text()
            blob = f"/blob/{site_config.READER_BRANCH}/book/"
            page.write_text(text.replace(blob, blob.replace("/book/", "/zh/book/")))
    if problems:
        raise SystemExit(
            "reader notebooks written, with problems (--keep-going):\n  "
            + "\n  ".join(problems)
        )
    return written


def _zip_all(notebooks: list[Path], target: Path) -> None:
    """All reader notebooks in one zip, served at
    ``_downloads/lnbn-book-notebooks.zip`` of the built site."""
    import zipfile

    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for nb in notebooks:
            zf.write(nb, f"lnbn-book-notebooks/{nb.name}")


def _point_colab_at_reader_branch(html: Path, cfg: dict) -> None:
    branch = (cfg.get("repository") or {}).get("branch", "main")
    pattern = re.compile(
        r"(https://colab\.research\.google\.com/github/[^/\"]+/[^/\"]+/blob/)"
        + re.escape(branch)
        + "/"
    )
    for page in html.rglob("*.html"):
        text = page.read_text()
        new = pattern.sub(rf"\g<1>{site_config.READER_BRANCH}/", text)
        if new != text:
            page.write_text(new)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--build",
        type=Path,
        default=BUILD,
        help="the jupyter-book output folder (_build)",
    )
    ap.add_argument(
        "--commit",
        default=None,
        help="the commit that built the book (default: git HEAD)",
    )
    ap.add_argument(
        "--keep-going",
        action="store_true",
        help="write every copy even with problems (marked in the text), then fail",
    )
    ap.add_argument(
        "--lang",
        choices=("en", "zh"),
        default="en",
        help="zh: the Chinese edition's chapters (after tools/translate.py build)",
    )
    ap.add_argument(
        "--check",
        nargs="+",
        type=Path,
        metavar="NOTEBOOK",
        help="only check these reader copies",
    )
    args = ap.parse_args(argv)
    if args.check:
        problems = [
            p
            for path in args.check
            for p in check(json.loads(path.read_text()), str(path))
        ]
        print("\n".join(problems) or f"{len(args.check)} reader notebooks ok")
        return 1 if problems else 0
    commit = args.commit or _git("rev-parse", "HEAD")
    if _git(
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "src",
        "book",
        "pyproject.toml",
    ):
        print(
            "warning: uncommitted changes in src/, book/ or pyproject.toml: "
            "the install cell pins "
            f"{commit[:12] or 'no commit'}, which does not hold them"
        )
    written = export(args.build, commit, keep_going=args.keep_going, lang=args.lang)
    repo = site_config.repository_url()
    print(
        f"{len(written)} reader notebooks in {written[0].parent if written else '-'} "
        f"(install cell: {repo or 'no repository set'} @ {commit[:12] or 'main'}); "
        "download buttons serve them, Colab buttons open the "
        f"'{site_config.READER_BRANCH}' branch"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
