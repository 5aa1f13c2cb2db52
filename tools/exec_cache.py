"""Key the book's execution cache on everything a chapter's outputs depend on.

    python tools/exec_cache.py          # print the key and whether the cache matches it

myst-nb's cache (``_build/.jupyter_cache``) re-executes a notebook only when its code
cells change. The outputs also depend on the library the cells import
(``src/lnbn_utils``), on ``LNBN_SEED`` and on the pinned requirements, so a change to
any of those would otherwise give a stale ``make book``. The book's Sphinx extension
(``tools/book_ext.py``) calls :func:`ensure` when a build starts: it hashes those
inputs, and clears the cache (and ``_build/jupyter_execute``) when the hash differs
from the one stored with the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY_FILE = "lnbn-cache-key"
INPUTS = ("src/lnbn_utils", "requirements.txt")  # pyproject only has lower bounds
# A requirement line with this marker is used by the build only (never imported by a
# notebook, e.g. the Chinese search's word splitter): it does not key the cache.
BUILD_ONLY = b"# build-only"


def _key_bytes(f: Path) -> bytes:
    data = f.read_bytes()
    if f.suffix == ".txt":
        lines = data.splitlines(keepends=True)
        data = b"".join(
            ln
            for ln in lines
            if BUILD_ONLY not in ln and not ln.lstrip().startswith(b"#")
        )  # comments and build-only pins do not change what a notebook computes
    return data


def cache_key(root: Path = ROOT, seed: str | None = None) -> str:
    """SHA-256 of the library's source, the requirements (less the build-only
    lines), the seed, Python's version."""
    h = hashlib.sha256()
    for name in INPUTS:
        path = root / name
        files = sorted(p for p in path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            if f.exists():
                h.update(
                    f.relative_to(root).as_posix().encode()
                    + b"\0"
                    + _key_bytes(f)
                    + b"\0"
                )
    seed = os.environ.get("LNBN_SEED", "0") if seed is None else seed
    h.update(f"LNBN_SEED={seed}\0python={sys.version_info[:2]}".encode())
    return h.hexdigest()


def ensure(build: Path, root: Path = ROOT, log=print) -> bool:
    """Clear ``build``'s execution cache if its inputs changed; return if it did."""
    cache = build / ".jupyter_cache"
    stamp = cache / KEY_FILE
    key = cache_key(root)
    stale = cache.exists() and (not stamp.exists() or stamp.read_text().strip() != key)
    if stale:
        log(
            "execution cache is stale (library, requirements, seed or Python changed): "
            f"clearing {cache}"
        )
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(build / "jupyter_execute", ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key + "\n")
    return stale


if __name__ == "__main__":
    build = ROOT / "_build"
    stamp = build / ".jupyter_cache" / KEY_FILE
    key = cache_key()
    have = stamp.read_text().strip() if stamp.exists() else "(none)"
    verdict = "current" if have == key else "will be cleared at the next build"
    print(f"key {key}\ncache {have} -> {verdict}")
