"""Keep the book's notebooks in their committed form.

    python tools/nbtool.py          # fix: strip outputs, kernelspec, install cell
    python tools/nbtool.py --check  # report what is off, exit 1 if anything is

Every chapter's first code cell (hidden in the online book) installs lnbn_utils where
it is not importable: Colab, Kaggle, Binder, a downloaded notebook. The committed cell
names no repository; the reader copies published with the book
(``tools/reader_notebooks.py``) fill in the repository URL and the exact commit that
built the page. ``LNBN_INSTALL_FROM`` overrides the repository at run time (the
Colab-path check points it at a local clone).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLAB_TAG = "colab-install"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def colab_cell_source() -> str:
    """The hidden first code cell: install lnbn_utils only where it is missing.

    In the committed notebooks ``REPO`` and ``COMMIT`` are empty; the reader copies
    that ``tools/reader_notebooks.py`` publishes fill them with the repository the
    book is published from and the exact commit that built it.
    """
    return _COLAB_CELL.strip("\n")


_COLAB_CELL = """
# Install lnbn_utils where it is missing (Colab, Kaggle, Binder, a downloaded copy),
# keeping the torch already there. Published copies pin the commit that built the book.
import os
import sys  # noqa: F401  (later hidden cells may look for "google.colab" in it)

REPO = ""  # the repository the book is published from (set in published copies)
COMMIT = ""  # the commit that built the published page (set in published copies)
try:
    import lnbn_utils  # noqa: F401
except ImportError:
    REPO = os.environ.get("LNBN_INSTALL_FROM") or REPO
    if not REPO:
        raise ImportError(
            "lnbn_utils is not installed and this copy of the notebook does not say "
            "where the book is published. Open the chapter from the online book (its "
            "download or Colab button), or pip install the library as the README says."
        ) from None
    SPEC = f"git+{REPO}@{COMMIT or 'main'}"
    %pip install -q {SPEC}
"""


def colab_cell() -> dict:
    return {
        "cell_type": "code",
        "id": "colab-install",
        "execution_count": None,
        "metadata": {"tags": ["remove-cell", COLAB_TAG]},
        "outputs": [],
        "source": colab_cell_source().splitlines(keepends=True),
    }


def fixed(nb: dict) -> dict:
    """The notebook as it should be committed."""
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        if isinstance(cell.get("source"), str):
            cell["source"] = cell["source"].splitlines(keepends=True)
    nb["metadata"]["kernelspec"] = dict(KERNELSPEC)
    nb["metadata"].pop("widgets", None)
    cells = [
        c for c in nb["cells"] if COLAB_TAG not in c.get("metadata", {}).get("tags", [])
    ]
    title = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"), 0)
    cells.insert(title + 1, colab_cell())  # right after the title cell
    for i, cell in enumerate(cells):
        cell.setdefault("id", f"cell-{i}")  # nbformat 4.5 wants an id on every cell
    nb["cells"] = cells
    nb["nbformat"], nb["nbformat_minor"] = 4, max(nb.get("nbformat_minor", 5), 5)
    return nb


def main(check: bool) -> int:
    bad = []
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        want = fixed(nb)
        if want != nb:
            bad.append(path.relative_to(ROOT))
            if not check:
                path.write_text(json.dumps(want, indent=1, ensure_ascii=False) + "\n")
    verb = "need fixing (run python tools/nbtool.py)" if check else "fixed"
    for p in bad:
        print(f"{p}: {verb}")
    return 1 if (check and bad) else 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv))
