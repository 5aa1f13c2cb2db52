"""Glue hygiene: references resolve, glued names are used and spelled out."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
PAGES = sorted(BOOK.glob("*.md"))

GLUE_REF = re.compile(r"\{glue(?::\w+)?\}`([^`]+)`")
GLUE_FIGURE = re.compile(r"^```\{glue:figure\}\s+(\S+)", re.M)  # a figure directive
GLUE_CALL = re.compile(r"lu\.glue\(\s*([^,\s]+)")
FINDING_CALL = re.compile(r"""lu\.finding\(\s*["'](\w+)["']""")
LITERAL = re.compile(r"""^["'](\w+)["']$""")


def _cells(path: Path, kind: str) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == kind]


def defined_names(path: Path) -> set[str]:
    code = "\n".join(_cells(path, "code"))
    names = {
        LITERAL.match(arg).group(1)
        for arg in GLUE_CALL.findall(code)
        if LITERAL.match(arg)
    }
    for key in FINDING_CALL.findall(code):
        names |= {key, key + "_ci", key + "_control"}
    return names


def references() -> list[tuple[str, str, str]]:
    """(page, notebook the name lives in, name) for every glue reference in the book."""
    refs = []
    texts = [(p, p.read_text()) for p in PAGES]
    texts += [(p, "\n".join(_cells(p, "markdown"))) for p in NOTEBOOKS]
    for page, text in texts:
        for target in GLUE_REF.findall(text) + GLUE_FIGURE.findall(text):
            target = target.split(":")[0] if "::" not in target else target
            if "::" in target:
                nb, name = target.split("::", 1)
                name = name.split(":")[0]
            else:
                nb, name = page.name, target
            refs.append((page.name, nb, name))
    return refs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_glue_names_are_spelled_out(path):
    code = "\n".join(_cells(path, "code"))
    bad = [arg for arg in GLUE_CALL.findall(code) if not LITERAL.match(arg)]
    assert not bad, f"glue names must be string literals (searchable), got {bad}"


def test_every_glue_reference_is_defined_by_the_notebook_it_names():
    missing = []
    for page, nb, name in references():
        path = BOOK / nb
        if not path.exists() or name not in defined_names(path):
            missing.append(f"{page}: {nb}::{name}")
    assert not missing, "undefined glue references:\n" + "\n".join(missing)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_glued_name_is_used(path):
    used = {name for _, nb, name in references() if nb == path.name}
    code = "\n".join(_cells(path, "code"))
    glued = {
        LITERAL.match(a).group(1) for a in GLUE_CALL.findall(code) if LITERAL.match(a)
    }
    unused = sorted(glued - used)
    assert not unused, f"glued but never referenced in prose: {unused}"


def test_cross_page_references_carry_a_format_spec():
    # myst-nb splits `doc::name:fmt` at the last colon: without a spec the name is lost
    bad = []
    for page in PAGES:
        for target in GLUE_REF.findall(page.read_text()):
            if "::" in target and ":" not in target.split("::", 1)[1]:
                bad.append(f"{page.name}: {target} (add :s, :.2f, ...)")
    assert not bad, "\n".join(bad)
