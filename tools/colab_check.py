"""Run every chapter as Colab does: a bare environment, then its own install cell.

    make test-colab                     # or: python tools/colab_check.py [NOTEBOOK_DIR]

``make test-colab`` runs it on the reader notebooks (``_build/reader/book``, written by
``tools/reader_notebooks.py``), the copies the Colab and download buttons give readers.
The Makefile builds a fresh virtual environment holding only torch, matplotlib and a
Jupyter kernel (what Colab has; no lnbn_utils, no myst-nb), then runs this script with
that environment's Python. Each notebook's install cell finds lnbn_utils missing and
installs it at the commit the book was built from; ``LNBN_INSTALL_FROM`` points it at a
local clone of the repository instead of GitHub. Each notebook runs top to bottom in its
own kernel; any error fails the check. The notebooks run in parallel (``JOBS``,
default 2, after the first, which installs the library alone). A notebook that passed
here before with the same code cells (the install cell pins the commit) is skipped: the
record is ``_build/colab-passed.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
PASSED = ROOT / "_build" / "colab-passed.json"


def code_key(path: Path) -> str:
    """Hash of a notebook's code cells (its install cell names the commit)."""
    nb = nbformat.read(path, as_version=4)
    code = "\0".join(c.source for c in nb.cells if c.cell_type == "code")
    return hashlib.sha256(code.encode()).hexdigest()


def run(path: Path) -> tuple[str, float, str | None]:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    try:
        NotebookClient(
            nb,
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        ).execute()
        error = None
    except Exception as exc:  # report and go on with the others
        error = f"{type(exc).__name__}: {str(exc)[-1500:]}"
    return path.name, time.perf_counter() - start, error


def main() -> int:
    if not os.environ.get("LNBN_INSTALL_FROM"):
        print(
            "set LNBN_INSTALL_FROM to the repository to install from (e.g. file:///path/to/clone)"
        )
        return 2
    try:
        import lnbn_utils  # noqa: F401

        print("lnbn_utils is already importable here: not a Colab-like environment")
        return 2
    except ImportError:
        pass
    book = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "book"
    passed = json.loads(PASSED.read_text()) if PASSED.exists() else {}
    notebooks = []
    for path in sorted(book.glob("*.ipynb")):
        if passed.get(path.name) == code_key(path):
            print(f"skipped  {path.name}: passed before with the same code")
        else:
            notebooks.append(path)
    if not notebooks:
        return 0
    results = [
        run(notebooks[0])
    ]  # the first install runs alone; the others then find it done
    with ThreadPoolExecutor(max_workers=int(os.environ.get("JOBS", "2"))) as pool:
        results += list(pool.map(run, notebooks[1:]))
    failed = 0
    for name, seconds, error in results:
        if not error:
            passed[name] = code_key(book / name)
        print(f"{seconds:7.1f} s  {name}  {'FAILED' if error else 'ok'}")
        if error:
            failed += 1
            print("   ", error.replace("\n", "\n    "))
    PASSED.parent.mkdir(parents=True, exist_ok=True)
    PASSED.write_text(json.dumps(passed, indent=1) + "\n")
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
