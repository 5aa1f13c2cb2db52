"""Execute the book's notebooks into myst-nb's execution cache, in parallel.

    python tools/prefill_cache.py [NOTEBOOK ...]     # default: every notebook in book/

``jupyter-book build`` executes the notebooks it does not find in its cache one after
the other; on a 2-core machine this runs them in a pool of one process per core first
(jupyter-cache's ``local-parallel`` executor), so the build only reads the cache. The
cache key of ``tools/exec_cache.py`` is applied first, so a stale cache is cleared
exactly as the build would clear it. A notebook that fails here is not cached; the
build then executes it again and reports the error in its usual way.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from jupyter_cache import get_cache
from jupyter_cache.executors import load_executor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exec_cache import ROOT, ensure  # noqa: E402

TIMEOUT_S = 300  # per cell, as execute.timeout in _config.yml
# Longest first (their nbval run times, about 100 s down to 7 s), so that two workers
# finish together. The pool hands notebooks out in the order they joined the cache's
# project, so a fresh cache (CI's) takes this order. Others run after these.
LONGEST_FIRST = ["02", "05", "03", "01", "04", "06", "00"]


def by_run_time(path: Path) -> int:
    prefix = path.name[:2]
    return (
        LONGEST_FIRST.index(prefix) if prefix in LONGEST_FIRST else len(LONGEST_FIRST)
    )


def main(argv: list[str]) -> int:
    build = ROOT / "_build"
    ensure(build)
    cache = get_cache(str(build / ".jupyter_cache"))
    paths = [Path(a).resolve() for a in argv] or sorted((ROOT / "book").glob("*.ipynb"))
    paths.sort(key=by_run_time)
    for path in paths:
        if path.suffix != ".ipynb" or not path.exists():
            raise SystemExit(f"expected existing .ipynb files, got {path}")
        cache.add_nb_to_project(str(path))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    executor = load_executor(
        "local-parallel", cache, logger=logging.getLogger("prefill")
    )
    result = executor.run_and_cache(
        filter_uris=[str(p) for p in paths],
        timeout=TIMEOUT_S,
        allow_errors=False,
    )
    print(f"prefill: {len(result.succeeded)} executed, {len(result.errored)} failed")
    for uri in result.errored:
        print(f"prefill: FAILED {uri} (the build will execute it again and report)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
