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


def main(argv: list[str]) -> int:
    build = ROOT / "_build"
    ensure(build)
    cache = get_cache(str(build / ".jupyter_cache"))
    paths = [Path(a).resolve() for a in argv] or sorted((ROOT / "book").glob("*.ipynb"))
    for path in paths:
        if path.suffix != ".ipynb" or not path.exists():
            raise SystemExit(f"expected existing .ipynb files, got {path}")
        cache.add_nb_to_project(str(path))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    executor = load_executor(
        "local-parallel", cache, logger=logging.getLogger("prefill")
    )
    result = executor.run_and_cache(
        filter_uris=[str(p) for p in paths], timeout=TIMEOUT_S, allow_errors=False
    )
    print(f"prefill: {len(result.succeeded)} executed, {len(result.errored)} failed")
    for uri in result.errored:
        print(f"prefill: FAILED {uri} (the build will execute it again and report)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
