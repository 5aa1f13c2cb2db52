"""The reader copies' install cell: it checks versions, not only presence."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import reader_notebooks  # noqa: E402

IPython = pytest.importorskip("IPython")


def _run_cell(source: str, versions: dict[str, str]) -> list[str]:
    """Run an install cell as IPython would, lnbn_utils present, with the package
    versions of ``versions``; return the %pip lines it ran."""
    from importlib.metadata import PackageNotFoundError

    from IPython.core.inputtransformer2 import TransformerManager

    code = TransformerManager().transform_cell(source)
    ran: list[str] = []

    class Shell:
        def run_line_magic(self, name, line):
            # IPython expands {names} from the cell's namespace
            ran.append(f"{name} " + line.format(**sys._getframe(1).f_globals))

    def version(mod):
        if mod not in versions:
            raise PackageNotFoundError(mod)
        return versions[mod]

    import importlib.metadata as md

    real = md.version
    md.version = version
    try:
        exec(code, {"get_ipython": lambda: Shell()})
    finally:
        md.version = real
    return ran


def test_needs_reads_the_imports():
    nb = {
        "cells": [
            {"cell_type": "code", "source": "import torch\nfrom transformers import X"},
            {"cell_type": "markdown", "source": "import numpy"},
        ]
    }
    assert reader_notebooks.needs(nb) == ("torch", "transformers")
    assert reader_notebooks.needs({"cells": []}) == ()


def test_install_cell_upgrades_an_old_transformers_and_keeps_a_new_one():
    src = reader_notebooks.install_source("https://x/y", "abc", ("transformers",))
    old = _run_cell(src, {"torch": "2.13.0", "transformers": "4.57.6"})
    assert len(old) == 1 and "transformers>=5.0,<6" in old[0]
    assert _run_cell(src, {"torch": "2.13.0+cpu", "transformers": "5.24.0"}) == []
    assert _run_cell(src, {"torch": "2.13.0"}) == []  # its own cell installs it


def test_install_cell_stops_on_an_old_torch_without_replacing_it():
    src = reader_notebooks.install_source("https://x/y", "abc")
    with pytest.raises(ImportError, match=r"torch >= 2\.4; found 2\.1\.0"):
        _run_cell(src, {"torch": "2.1.0"})
    assert "transformers" not in src.split("CHECKS =")[1].split("\n")[0]


def _rewriter(store: dict) -> reader_notebooks.Rewriter:
    return reader_notebooks.Rewriter(store, lambda doc: {}, None, None, "book/x.ipynb")


def test_a_glued_figure_becomes_an_attached_image_with_its_alt_text_and_caption():
    rw = _rewriter({"fig": {"data": {"image/png": "iVBOR", "text/plain": "<Figure>"}}})
    src = (
        "Intro.\n\n```{glue:figure} fig\n:alt: A line plot\n:name: f1\n\n"
        "What to see.\n```"
    )
    out = rw.markdown(src)
    assert "![A line plot](attachment:fig.png)" in out and "*What to see.*" in out
    assert rw.attachments == {"fig.png": {"image/png": "iVBOR"}}
    assert not rw.errors


def test_a_figure_glued_inline_is_refused():
    rw = _rewriter({"fig": {"data": {"image/png": "iVBOR", "text/plain": "<Figure>"}}})
    with pytest.raises(KeyError, match="glue:figure"):
        rw.markdown("See {glue}`fig`.")
