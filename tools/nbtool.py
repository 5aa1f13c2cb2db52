"""Keep the book's notebooks in their committed form.

    python tools/nbtool.py          # fix: strip outputs, kernelspec python3, sync the Colab cell
    python tools/nbtool.py --check  # report what is off, exit 1 if anything is

Every chapter's first code cell installs lnbn_utils on Colab. Its repository URL is
read from ``_config.yml`` (``repository.url``), the one place it is set. The
environment variable ``LNBN_INSTALL_FROM`` overrides it at run time (the Colab-path
test points it at a local clone) and forces the install outside Colab too.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLAB_TAG = "colab-install"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def repo_url() -> str:
    m = re.search(r"^repository:\s*\n\s+url:\s*(\S+)", (ROOT / "_config.yml").read_text(), re.M)
    if not m:
        raise SystemExit("_config.yml has no repository.url")
    return m.group(1)


def colab_cell_source(url: str, branch: str = "main") -> str:
    return (
        "# Colab only: install lnbn_utils from the book's repository (Colab's own torch is kept).\n"
        "import os, sys\n"
        'if "google.colab" in sys.modules or os.environ.get("LNBN_INSTALL_FROM"):\n'
        f'    REPO = os.environ.get("LNBN_INSTALL_FROM", "{url}")\n'
        f'    %pip install -q "git+{{REPO}}@{branch}"  # no reinstall of torch: it is already there'
    )


def colab_cell(url: str) -> dict:
    return {
        "cell_type": "code",
        "id": "colab-install",
        "execution_count": None,
        "metadata": {"tags": ["remove-cell", COLAB_TAG]},
        "outputs": [],
        "source": colab_cell_source(url).splitlines(keepends=True),
    }


def fixed(nb: dict, url: str) -> dict:
    """The notebook as it should be committed."""
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        if isinstance(cell.get("source"), str):
            cell["source"] = cell["source"].splitlines(keepends=True)
    nb["metadata"]["kernelspec"] = dict(KERNELSPEC)
    nb["metadata"].pop("widgets", None)
    cells = [c for c in nb["cells"] if COLAB_TAG not in c.get("metadata", {}).get("tags", [])]
    title = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"), 0)
    cells.insert(title + 1, colab_cell(url))  # right after the title cell
    for i, cell in enumerate(cells):
        cell.setdefault("id", f"cell-{i}")  # nbformat 4.5 wants an id on every cell
    nb["cells"] = cells
    nb["nbformat"], nb["nbformat_minor"] = 4, max(nb.get("nbformat_minor", 5), 5)
    return nb


def main(check: bool) -> int:
    url, bad = repo_url(), []
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        want = fixed(nb, url)
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
