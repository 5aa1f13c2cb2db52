"""The evidence ledger extension, on a tiny book built in a temporary folder."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JB = Path(sys.executable).with_name("jupyter-book")

FINDING = """import lnbn_utils as lu
lu.finding("ch1_tiny_gap", claim=1, statement="A tiny gap is positive", value=0.5,
           ci=(0.2, 0.8), control=0.0, control_label="LayerNorm", expect=">",
           threshold=0.1, unit="nats", shape="B=4, T=8", ci_source="5 seeds")"""


def _notebook(*sources: str) -> str:
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": "# Tiny\n\n## Section A"}
    ]
    for src in sources:
        cells.append(
            {"cell_type": "code", "execution_count": None, "metadata": {},
             "outputs": [], "source": src}
        )  # fmt: skip
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4,
          "nbformat_minor": 5}  # fmt: skip
    return json.dumps(nb)


def _build(tmp_path: Path, *sources: str) -> subprocess.CompletedProcess:
    (tmp_path / "_ext").mkdir()
    shutil.copy(ROOT / "book/_ext/evidence_ledger.py", tmp_path / "_ext")
    (tmp_path / "_config.yml").write_text(
        "title: t\nexecute:\n  execute_notebooks: force\n"
        "sphinx:\n  local_extensions:\n    evidence_ledger: _ext\n"
    )
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n"
        "  - file: chapter\n  - file: evidence\n"
    )
    (tmp_path / "intro.md").write_text("# Intro\n")
    (tmp_path / "chapter.ipynb").write_text(_notebook(*sources))
    (tmp_path / "evidence.md").write_text(
        "# Ledger\n\n```{evidence-summary}\n:keys: ch1_tiny_gap\n:alt: A bar chart\n"
        "The gap and its control.\n```\n\n```{evidence-ledger}\n```\n\n"
        "```{seed-sweep-table}\n```\n\n"
        "Gap: {glue:text}`chapter.ipynb::ch1_tiny_gap_ci:s`.\n"
    )
    cmd = [str(JB), "build", str(tmp_path), "-W", "--keep-going"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)


@pytest.mark.skipif(not JB.exists(), reason="jupyter-book not installed")
def test_the_ledger_lists_a_finding_with_its_interval_and_a_link(tmp_path):
    out = _build(tmp_path, FINDING)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    html = (tmp_path / "_build/html/evidence.html").read_text()
    assert "A tiny gap is positive" in html and "0.5 [0.2, 0.8] nats" in html
    assert 'href="chapter.html#section-a"' in html
    assert "1 findings from 1 pages" in html
    assert ">0.5 [0.2, 0.8]</span>." in html  # an interval glues without quotes
    assert 'alt="A bar chart"' in html and "The gap and its control." in html
    assert (tmp_path / "_build/html/_images/evidence_summary.png").stat().st_size > 1000
    assert "sweep-table" in html and "no sweep" in html  # the per-page table


@pytest.mark.skipif(not JB.exists(), reason="jupyter-book not installed")
def test_a_finding_without_a_record_fails_the_build(tmp_path):
    # the call is in the source but never runs, so it leaves no record
    out = _build(tmp_path, FINDING, 'if False:\n    lu.finding("ghost", claim=1)')
    assert out.returncode != 0
    assert "finding 'ghost' in chapter has no record" in out.stdout + out.stderr
