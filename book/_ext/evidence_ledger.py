"""Sphinx extension: the evidence ledger, generated from the executed chapters.

``lu.finding(...)`` glues a JSON record under ``<key>__record`` in every notebook.
The ``evidence-ledger`` directive becomes, at write time, one table per claim that
lists every recorded finding with its value, interval, control, test and the section
that measured it. Nothing is typed by hand, and the build warns (``-W``: fails) when

* a ``lu.finding("key", ...)`` call in a notebook's source has no record (it did not
  run), or a record has no such call in the source it came from;
* a recorded finding did not hold (a timing finding is listed with its status);
* the page that holds the directive cannot find the executed notebooks' glue data.

The "Seed sweep" column reads ``book/data/seed_sweep/<notebook>.json``
(``tools/seed_sweep.py``): at how many of the swept base seeds the finding held, and
its worst seed. Seeds swept with other code than the notebook's current code cells do
not count; a finding with none left shows "sweep stale" (the build says so in its log,
not as a warning, so editing a chapter stays cheap).
"""

from __future__ import annotations

import ast
import html
import json
import posixpath
import re
import sys
import textwrap
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)
SWEEP_DIR = Path("book") / "data" / "seed_sweep"  # under the book's source folder


def _code_hash(srcdir: Path, source: Path):
    """The sweep tool's hash of ``source``'s code cells (None without the tool)."""
    tools = srcdir / "tools"
    if not (tools / "seed_sweep.py").exists():
        return None
    if str(tools) not in sys.path:
        sys.path.insert(0, str(tools))
    from seed_sweep import code_hash

    return code_hash(source)


CLAIMS = {
    0: "Background: two ways to normalize",
    1: "Claim 1: batch dependence and parallel processing",
    2: "Claim 2: variable sequence lengths",
    3: "Claim 3: training stability",
    4: "Claim 4: memory efficiency",
    5: "Beyond the claims: after LayerNorm",
    6: "Audit your own model",
}
# The Chinese edition (tools/translate.py, Sphinx language zh_CN): headings and column
# names; the rows (statements, controls, tests) are the English records.
ZH = {
    "Finding": "实证发现",
    "Measured [95% interval]": "测量值 [95% 区间]",
    "Control": "对照",
    "Test": "检验",
    "Seed sweep": "种子扫描",
    "Shape; interval over": "形状；区间取自",
    "Page": "页面",
    "Findings": "实证发现",
    "Checks": "核验",
    "Seed sweep of its findings": "其实证发现的种子扫描",
    CLAIMS[0]: "背景：两种归一化方式",
    CLAIMS[1]: "论断 1：批量依赖与并行处理",
    CLAIMS[2]: "论断 2：可变序列长度",
    CLAIMS[3]: "论断 3：训练稳定性",
    CLAIMS[4]: "论断 4：内存效率",
    CLAIMS[5]: "论断之外：LayerNorm 之后",
    CLAIMS[6]: "审查你自己的模型",
}


def _t(app: Sphinx, text: str) -> str:
    """``text`` in the build's language (Chinese where :data:`ZH` has it)."""
    zh = (app.config.language or "en").startswith("zh")
    return ZH.get(text, text) if zh else text


FINDING_CALL = re.compile(r"""lu\.finding\(\s*["'](\w+)["']""")


class ledger_placeholder(nodes.General, nodes.Element):
    """Replaced by the tables once every chapter has been read."""


class summary_placeholder(nodes.General, nodes.Element):
    """Replaced by a figure of the chosen findings once every chapter has been read."""


class sweep_placeholder(nodes.General, nodes.Element):
    """Replaced by the per-page table of findings, checks and seed sweeps."""


class SweepTable(SphinxDirective):
    """Per page: findings, checks (asserts) and the seed sweep's counts."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.env.metadata[self.env.docname]["evidence_ledger"] = True
        return [sweep_placeholder()]


class EvidenceSummary(SphinxDirective):
    """One panel per listed finding: measured value with interval, control, threshold.

    The directive's content is the caption; ``:keys:`` lists the findings to draw,
    ``:titles:`` gives each panel a short title (separated by ``|``).
    """

    has_content = True
    option_spec = {
        "keys": directives.unchanged_required,
        "titles": directives.unchanged,
        "alt": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        self.env.metadata[self.env.docname]["evidence_ledger"] = True
        node = summary_placeholder()
        node["keys"] = self.options["keys"].split()
        node["alt"] = self.options.get("alt", "")
        titles = self.options.get("titles", "")
        node["titles"] = [t.strip() for t in titles.split("|")] if titles else []
        if node["titles"] and len(node["titles"]) != len(node["keys"]):
            raise self.error("expected one title per key (titles separated by '|')")
        node["caption"] = " ".join(self.content)
        return [node]


class EvidenceLedger(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        self.env.metadata[self.env.docname]["evidence_ledger"] = True
        return [ledger_placeholder()]


def _glue_folder(app: Sphinx) -> Path:
    folder = getattr(app.env.mystnb_config, "output_folder", "")
    return Path(folder) if folder else Path(app.outdir).parent / "jupyter_execute"


def _records(app: Sphinx) -> list[dict]:
    out = []
    folder = _glue_folder(app)
    for docname in sorted(app.env.found_docs):
        path = folder / f"{docname}.glue.json"
        if not path.exists():
            continue
        for name, item in json.loads(path.read_text()).items():
            if not name.endswith("__record"):
                continue
            text = item["data"]["text/plain"]
            out.append({**json.loads(ast.literal_eval(text)), "docname": docname})
    return out


def _source_keys(app: Sphinx, docname: str) -> set[str]:
    path = Path(app.env.doc2path(docname))
    if path.suffix != ".ipynb":
        return set()
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return set(FINDING_CALL.findall(code))


def _section_id(app: Sphinx, docname: str, key: str) -> str:
    doctree = app.env.get_doctree(docname)
    for block in doctree.findall(nodes.literal_block):
        if f'"{key}"' in block.astext() or f"'{key}'" in block.astext():
            node = block
            while node is not None and not isinstance(node, nodes.section):
                node = node.parent
            if node is not None and node["ids"]:
                return node["ids"][0]
    return ""


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.3g}"


def _value_text(r: dict) -> str:
    shown = _fmt(r["value"])
    if r["ci"]:
        shown += f" [{_fmt(r['ci'][0])}, {_fmt(r['ci'][1])}]"
    return f"{shown} {r['unit']}".strip()


def _test_text(r: dict) -> str:
    if r["expect"] == "within":
        a, b = r["threshold"]
        test = f"inside [{_fmt(a)}, {_fmt(b)}]"
    else:
        test = f"{r['expect']} {_fmt(r['threshold'])}"
    what = "interval" if r["ci"] else "value"
    why = f" ({r['why']})" if r.get("why") else ""
    status = "holds" if r["passed"] else "does NOT hold here"
    margin = r.get("margin")
    if margin is not None:
        status += f", margin {margin:.2g} interval widths"
    timing = " (timing: strict only in CI)" if r["timing"] else ""
    return f"{what} {test}{why}: {status}{timing}"


def _worst_margin(f: dict) -> float:
    lo, hi = f["ci"] or (f["value"], f["value"])
    if f["expect"] == ">":
        return lo - f["threshold"]
    if f["expect"] == "<":
        return f["threshold"] - hi
    return min(lo - f["threshold"][0], f["threshold"][1] - hi)


def sweep_texts(srcdir: Path, docname: str, source: Path) -> dict:
    """{key: "k/n base seeds; worst seed s: v [lo, hi]"} for one notebook's findings.

    Keys absent from the result have no sweep; the value "sweep stale" means the
    notebook's code changed since its seeds were swept.
    """
    target = srcdir / SWEEP_DIR / f"{Path(docname).name}.json"
    if not target.exists() or source.suffix != ".ipynb":
        return {}
    seeds = json.loads(target.read_text()).get("seeds", {})
    current = _code_hash(srcdir, source)
    now = {s: e for s, e in seeds.items() if e.get("code_hash") == current}
    keys = {k for e in seeds.values() for k in e.get("findings", {})}
    if not now:
        return {k: "sweep stale" for k in keys}
    out = {}
    for k in sorted(keys | {k for e in now.values() for k in e["findings"]}):
        ran = {s: e["findings"][k] for s, e in now.items() if k in e["findings"]}
        held = sum(1 for f in ran.values() if f["held"])
        text = f"{held}/{len(now)} base seeds"
        if ran:
            s, f = min(ran.items(), key=lambda sf: _worst_margin(sf[1]))
            shown = _fmt(f["value"])
            if f["ci"]:
                shown += f" [{_fmt(f['ci'][0])}, {_fmt(f['ci'][1])}]"
            text += f"; worst: seed {s}, {shown}"
        errors = [s for s, e in now.items() if e["status"] == "error"]
        if errors:
            text += f"; error at seed {', '.join(errors)}"
        out[k] = text
    return out


def _row(cells: list[nodes.Node]) -> nodes.row:
    row = nodes.row()
    for c in cells:
        entry = nodes.entry()
        entry += c if isinstance(c, nodes.paragraph) else nodes.paragraph(text=str(c))
        row += entry
    return row


HEADER = [
    "Finding",
    "Measured [95% interval]",
    "Control",
    "Test",
    "Seed sweep",
    "Shape; interval over",
]


def _table(app: Sphinx, fromdoc: str, records: list[dict]) -> nodes.table:
    table = nodes.table(classes=["evidence-ledger"])
    group = nodes.tgroup(cols=len(HEADER))
    table += group
    for width in (30, 16, 14, 16, 12, 12):
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    head += _row([_t(app, h) for h in HEADER])
    group += head
    body = nodes.tbody()
    sweeps: dict[str, dict] = {}
    for r in records:
        if r["docname"] not in sweeps:
            source = Path(app.env.doc2path(r["docname"]))
            sweeps[r["docname"]] = sweep_texts(Path(app.srcdir), r["docname"], source)
        sweep = sweeps[r["docname"]].get(r["key"], "no sweep")
        uri = app.builder.get_relative_uri(fromdoc, r["docname"])
        anchor = _section_id(app, r["docname"], r["key"])
        para = nodes.paragraph()
        para += nodes.reference(
            "", r["statement"], refuri=uri + ("#" + anchor if anchor else "")
        )
        para += nodes.Text(" ")
        para += nodes.literal(text=r["key"])
        control = r["control_label"]
        if r["control"] is not None:
            control += f": {_fmt(r['control'])} {r['unit']}".rstrip()
        shape = "; ".join(s for s in (r["shape"], r["ci_source"]) if s) or "-"
        body += _row([para, _value_text(r), control, _test_text(r), sweep, shape])
    group += body
    return table


def _check(app: Sphinx, records: list[dict]) -> None:
    recorded = {(r["docname"], r["key"]) for r in records}
    docs = {r["docname"] for r in records} | {
        d for d in app.env.found_docs if str(app.env.doc2path(d)).endswith(".ipynb")
    }
    for docname in sorted(docs):
        in_source = _source_keys(app, docname)
        for key in sorted(in_source - {k for d, k in recorded if d == docname}):
            logger.warning(
                f"evidence ledger: finding {key!r} in {docname} has no record"
            )
        for key in sorted({k for d, k in recorded if d == docname} - in_source):
            logger.warning(
                f"evidence ledger: record {key!r} has no lu.finding in {docname}"
            )
    for r in records:
        if not r["passed"] and not r["timing"]:
            logger.warning(f"evidence ledger: finding {r['key']!r} did not hold")
    for docname in sorted({r["docname"] for r in records}):
        texts = sweep_texts(Path(app.srcdir), docname, Path(app.env.doc2path(docname)))
        stale = sorted(k for k, t in texts.items() if t == "sweep stale")
        if stale or not texts:
            what = f"{len(stale)} findings 'sweep stale'" if stale else "no sweep"
            logger.info(f"evidence ledger: {docname}: {what} (make seed-sweep NB=...)")


def _draw_summary(records: list[dict], titles: list[str], path: Path) -> None:
    """A forest plot: one panel per claim, one row per finding, legible at page width.

    Findings of one claim share the panel's x axis (give them one unit); each row shows
    the measurement with its 95% interval, its threshold as a dashed tick, and zero.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: list[list[int]] = []
    for i, r in enumerate(records):
        if groups and records[groups[-1][0]]["claim"] == r["claim"]:
            groups[-1].append(i)
        else:
            groups.append([i])
    heights = [len(g) + 1.2 for g in groups]
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(7.0, 0.55 * sum(heights) + 0.3),  # drawn at about page width
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, group in zip(axes[:, 0], groups):
        for row, i in enumerate(group):
            r, y = records[i], -row
            lo, hi = r["ci"] or (r["value"], r["value"])
            err = [[r["value"] - lo], [hi - r["value"]]]
            ax.errorbar(
                [r["value"]], [y], xerr=err, fmt="o", color="#D55E00", capsize=5
            )
            bounds = r["threshold"] if r["expect"] == "within" else [r["threshold"]]
            for t in bounds:
                ax.plot([t, t], [y - 0.35, y + 0.35], color="gray", ls="--", lw=1.5)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_yticks([-row for row in range(len(group))])
        ax.set_yticklabels([textwrap.fill(titles[i], 28) for i in group], fontsize=11)
        ax.set_ylim(-len(group) + 0.4, 0.6)
        first = records[group[0]]
        title = CLAIMS.get(first["claim"], str(first["claim"]))
        ax.set_title(title, fontsize=12, loc="left", x=-0.62, fontweight="bold")
        ax.set_xlabel(first["unit"] or "value", fontsize=11)
        ax.tick_params(axis="x", labelsize=10)
        ax.margins(x=0.15)
    inch = 0.55 * sum(heights) + 0.3
    fig.subplots_adjust(
        left=0.42, right=0.97, top=1 - 0.45 / inch, bottom=0.75 / inch, hspace=1.0
    )
    fig.patch.set_facecolor("white")
    fig.savefig(path, dpi=110, facecolor="white")
    plt.close(fig)


def _summary_figure(app: Sphinx, docname: str, node: summary_placeholder, records):
    by_key = {r["key"]: r for r in records}
    missing = [k for k in node["keys"] if k not in by_key]
    if missing:
        logger.warning(f"evidence summary: no finding recorded for {missing}")
        return nodes.paragraph(text="(summary figure unavailable: findings missing)")
    images = Path(app.outdir) / "_images"
    images.mkdir(parents=True, exist_ok=True)
    chosen = [by_key[k] for k in node["keys"]]
    titles = node["titles"] or [r["statement"] for r in chosen]
    _draw_summary(chosen, titles, images / "evidence_summary.png")
    page = app.builder.get_target_uri(docname)
    uri = posixpath.relpath(
        "_images/evidence_summary.png", posixpath.dirname(page) or "."
    )
    alt, caption = (
        html.escape(node["alt"] or node["caption"]),
        html.escape(node["caption"]),
    )
    markup = (
        f'<figure class="evidence-summary" id="fig-evidence-summary">'
        f'<img src="{uri}" alt="{alt}" style="width: 100%; max-width: 770px"/>'
        f"<figcaption><p>{caption}</p></figcaption></figure>"
    )
    return nodes.raw("", markup, format="html")


def _count_checks(source: Path) -> int:
    cells = json.loads(source.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return len(
        re.findall(r"^\s*(?:assert |torch\.testing\.assert_close\()", code, re.M)
    )


def _sweep_table(app: Sphinx, fromdoc: str, records: list[dict]) -> nodes.table:
    header = ["Page", "Findings", "Checks", "Seed sweep of its findings"]
    table = nodes.table(classes=["sweep-table"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in (34, 12, 12, 42):
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    head += _row([_t(app, h) for h in header])
    group += head
    body = nodes.tbody()
    pages = [
        d for d in app.env.found_docs if str(app.env.doc2path(d)).endswith(".ipynb")
    ]
    for docname in sorted(pages):
        source = Path(app.env.doc2path(docname))
        keys = [r["key"] for r in records if r["docname"] == docname]
        texts = sweep_texts(Path(app.srcdir), docname, source)
        counts = [texts.get(k, "no sweep") for k in keys]
        if not keys:
            sweep = "-"
        elif "sweep stale" in counts:
            sweep = "sweep stale (the code changed since)"
        elif "no sweep" in counts:
            sweep = "no sweep"
        else:
            fracs = [tuple(map(int, t.split()[0].split("/"))) for t in counts]
            full = sum(1 for k, n in fracs if k == n)
            nine = sum(1 for k, n in fracs if k < n and k >= 0.9 * n)
            n_seeds = max(n for _, n in fracs)
            sweep = (
                f"{n_seeds} base seeds: {full} held at every seed, {nine} at >= 90%, "
                f"{len(fracs) - full - nine} below"
            )
        para = nodes.paragraph()
        uri = app.builder.get_relative_uri(fromdoc, docname)
        para += nodes.reference("", app.env.titles[docname].astext(), refuri=uri)
        body += _row([para, str(len(keys)), str(_count_checks(source)), sweep])
    group += body
    return table


def resolve(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    for node in doctree.findall(sweep_placeholder):
        node.replace_self(_sweep_table(app, docname, _records(app)))
    summaries = list(doctree.findall(summary_placeholder))
    placeholders = list(doctree.findall(ledger_placeholder))
    if not placeholders and not summaries:
        return
    records = _records(app)
    for node in summaries:
        node.replace_self(_summary_figure(app, docname, node, records))
    if not placeholders:
        return
    if not records:
        logger.warning("evidence ledger: no findings found in the executed notebooks")
    _check(app, records)
    content: list[nodes.Node] = []
    n_docs = len({r["docname"] for r in records})
    summary = f"{len(records)} findings from {n_docs} pages."
    if _t(app, "Test") != "Test":
        summary = f"共 {len(records)} 个实证发现，来自 {n_docs} 个页面。"
    content.append(nodes.paragraph(text=summary))
    for claim in sorted({r["claim"] for r in records}):
        group = [r for r in records if r["claim"] == claim]
        title = CLAIMS.get(claim, f"Claim {claim}")
        content.append(nodes.rubric(text=_t(app, title)))
        content.append(_table(app, docname, group))
    for node in placeholders:
        node.replace_self(content)


def always_outdated(app, env, added, changed, removed) -> list[str]:
    return [d for d, meta in env.metadata.items() if meta.get("evidence_ledger")]


def setup(app: Sphinx) -> dict:
    app.add_node(ledger_placeholder)
    app.add_node(summary_placeholder)
    app.add_node(sweep_placeholder)
    app.add_directive("seed-sweep-table", SweepTable)
    app.add_directive("evidence-ledger", EvidenceLedger)
    app.add_directive("evidence-summary", EvidenceSummary)
    app.connect("doctree-resolved", resolve)
    app.connect("env-get-outdated", always_outdated)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
