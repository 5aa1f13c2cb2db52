"""Execute the book's notebooks into myst-nb's execution cache, in parallel: the test.

    python tools/prefill_cache.py [NOTEBOOK ...]     # default: every notebook in book/

Each notebook is executed once per base seed (``LNBN_SEED``), on both cores
(jupyter-cache's ``local-parallel`` executor), into the cache that ``jupyter-book
build`` and the reader notebooks (download and Colab copies) then read. This execution
*is* the test of ``make test``: an ``assert`` cell or a finding that does not hold
stops its notebook, and this script prints the failing cell's traceback and exits 1,
so the build never executes a notebook a second time. At the end it prints each
notebook's run time (the sum of its cells, from the cache) against its page budget and
warns about a page over budget. The cache key of ``tools/exec_cache.py`` is applied
first, so a stale cache is cleared exactly as the build would clear it.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from jupyter_cache import get_cache
from jupyter_cache.executors import load_executor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exec_cache import ROOT, ensure  # noqa: E402

TIMEOUT_S = 300  # per cell, as execute.timeout in _config.yml
BUDGET_S = {"00": 30, "04": 90, "06": 90}  # by chapter prefix; every other page: 120 s
DEFAULT_BUDGET_S = 120


def budget(path: Path) -> int:
    """The page budget of a notebook on an idle 2-core machine (seconds)."""
    return BUDGET_S.get(path.name[:2], DEFAULT_BUDGET_S)


def time_table(cache, paths: list[Path]) -> list[str]:
    """One line per notebook: cached run time, budget, and a warning when over."""
    lines = ["notebook run times (s, sum over cells, from the execution cache):"]
    total = 0.0
    for path in paths:
        try:
            record = cache.get_cached_project_nb(str(path))
        except Exception:  # noqa: BLE001 (jupyter-cache raises several kinds)
            record = None
        seconds = (record.data or {}).get("execution_seconds") if record else None
        if seconds is None:
            lines.append(f"    -    {path.name}: not in the cache")
            continue
        total += seconds
        over = seconds > budget(path)
        flag = f"  WARNING: over its {budget(path)} s budget" if over else ""
        lines.append(f"{seconds:7.1f}  {path.name} (budget {budget(path)}){flag}")
    lines.append(f"{total:7.1f}  total (CPU seconds of one seed)")
    return lines


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
    failed = result.excepted + result.errored
    print(f"prefill: {len(result.succeeded)} executed, {len(failed)} failed")
    print("\n".join(time_table(cache, paths)))
    for uri in failed:
        traceback = cache.get_project_record(uri).traceback or "(no traceback)"
        traceback = re.sub(r"\x1b\[[0-9;]*m", "", traceback)  # no terminal colours
        cell = traceback.find("An error occurred while executing")
        traceback = traceback[cell:] if cell >= 0 else traceback
        print(f"\nprefill: FAILED {uri}\n{traceback[-6000:]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
