"""The notebooks' committed form: no outputs, kernelspec python3, Colab cell in sync, a title, seeded."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def test_nbtool_check_passes():
    out = subprocess.run([sys.executable, "tools/nbtool.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_skeleton(path):
    nb = json.loads(path.read_text())
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown" and first.startswith("# "), "first cell must be the # Title"
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "lu.base_seed()" in code, "every notebook takes its seed from LNBN_SEED via lu.base_seed()"
    assert "set_num_threads(1)" in code
    assert "assert" in code
    assert "myst_nb" not in code, "use lu.glue (works on Colab too), not myst_nb directly"


def test_toc_lists_exactly_existing_pages():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())

    def files(node):
        if isinstance(node, dict):
            if "file" in node:
                yield node["file"]
            for v in node.values():
                yield from files(v)
        elif isinstance(node, list):
            for v in node:
                yield from files(v)

    listed = [toc["root"], *files(toc)]
    for f in listed:
        assert any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb")), f"{f} is in _toc.yml but missing"
    for nb in NOTEBOOKS:
        assert f"book/{nb.stem}" in listed, f"{nb.name} exists but is not in _toc.yml"
