"""Execute chapters at several base seeds and record every finding: the seed sweep.

    python tools/seed_sweep.py --seeds "0-9" [--nb 03_training_stability ...] [--jobs 2]
    make seed-sweep SEEDS="0 1 2 3 4 5 6 7 8 9" [NB=03_training_stability]

Each notebook runs once per base seed (``LNBN_SEED``) in its own kernel, with
``LNBN_SWEEP_LOG`` set so that ``lu.finding`` records a finding that does not hold
instead of stopping the notebook. A plain ``assert`` (a check) or any other error still
stops it: the seed is recorded as "error" with the message, and the sweep goes on.

Results merge into ``book/data/seed_sweep/<notebook>.json``, one file per notebook so
that chapters are swept (and committed) independently. Each seed's entry stores the
hash of the notebook's code cells it ran; the evidence ledger counts only the seeds
whose hash matches the notebook's current code, and shows "sweep stale" otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
OUT = BOOK / "data" / "seed_sweep"
TIMEOUT_S = 900  # per cell


def code_hash(path: Path) -> str:
    """SHA-256 (first 16 hex digits) of a notebook's code cells, in order."""
    cells = json.loads(Path(path).read_text())["cells"]
    h = hashlib.sha256()
    for c in cells:
        if c["cell_type"] == "code":
            src = c["source"] if isinstance(c["source"], str) else "".join(c["source"])
            h.update(src.encode() + b"\0")
    return h.hexdigest()[:16]


def lib_hash(root: Path = ROOT) -> str:
    h = hashlib.sha256()
    for f in sorted((root / "src" / "lnbn_utils").rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def parse_seeds(spec: str) -> list[int]:
    """'0-9', '0 1 2', '0,3,5-7' -> sorted unique seeds; anything else is refused."""
    seeds: set[int] = set()
    for part in re.split(r"[,\s]+", spec.strip()):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(
                f"expected seeds like '0-9', '0 1 2' or '0,3,5-7', got {spec!r}"
            )
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise ValueError(f"expected a rising seed range, got {part!r}")
        seeds.update(range(a, b + 1))
    return sorted(seeds)


def notebooks(names: list[str]) -> list[Path]:
    if not names:
        return sorted(BOOK.glob("*.ipynb"))
    out = []
    for name in names:
        path = BOOK / (Path(name).stem + ".ipynb")
        if not path.exists():
            raise ValueError(f"expected a notebook in book/, got {name!r}")
        out.append(path)
    return out


def run_one(path: str, seed: int) -> dict:
    """Execute one notebook at one base seed; return its sweep entry."""
    import nbformat
    from nbclient import NotebookClient

    saved = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "findings.jsonl"
        os.environ.update(
            LNBN_SEED=str(seed), LNBN_SWEEP_LOG=str(log), LNBN_STRICT_TIMING="1"
        )
        nb = nbformat.read(path, as_version=4)
        start, error = time.perf_counter(), None
        try:
            NotebookClient(
                nb,
                timeout=TIMEOUT_S,
                kernel_name="python3",
                resources={"metadata": {"path": str(Path(path).parent)}},
            ).execute()
        except Exception as exc:  # recorded, and the sweep goes on
            error = f"{type(exc).__name__}: {str(exc)[-600:]}"
        finally:
            os.environ.clear()
            os.environ.update(saved)
        seconds = time.perf_counter() - start
        rows = (
            [json.loads(x) for x in log.read_text().splitlines()]
            if log.exists()
            else []
        )
    findings = {
        r["key"]: {
            "value": r["value"],
            "ci": r["ci"],
            "expect": r["expect"],
            "threshold": r["threshold"],
            "held": r["passed"],
            "timing": r["timing"],
        }
        for r in rows
    }
    return {
        "status": "error" if error else "ok",
        "error": error,
        "seconds": round(seconds, 1),
        "code_hash": code_hash(Path(path)),
        "lib_hash": lib_hash(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "findings": findings,
    }


def merge(path: Path, seed: int, entry: dict, out: Path = OUT) -> Path:
    """Write one seed's entry into the notebook's sweep file (other seeds kept)."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{path.stem}.json"
    data = json.loads(target.read_text()) if target.exists() else {}
    data.setdefault("notebook", path.stem)
    data.setdefault("seeds", {})[str(seed)] = entry
    data["seeds"] = dict(sorted(data["seeds"].items(), key=lambda kv: int(kv[0])))
    target.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    return target


def summary(path: Path, out: Path = OUT) -> list[str]:
    """One line per finding: held at k of n current seeds."""
    target = out / f"{path.stem}.json"
    if not target.exists():
        return [f"{path.stem}: no sweep"]
    current = code_hash(path)
    seeds = {
        s: e
        for s, e in json.loads(target.read_text())["seeds"].items()
        if e["code_hash"] == current
    }
    keys = sorted({k for e in seeds.values() for k in e["findings"]})
    lines = [f"{path.stem}: {len(seeds)} current seeds"]
    for s, e in seeds.items():
        if e["status"] == "error":
            lines.append(f"  error at seed {s}: {e['error'][:200]}")
    for k in keys:
        held = sum(1 for e in seeds.values() if e["findings"].get(k, {}).get("held"))
        lines.append(f"  {held}/{len(seeds)}  {k}")
    return lines


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", required=True, help="e.g. '0-9' or '0 1 2'")
    ap.add_argument("--nb", nargs="*", default=[], help="notebook stems (default: all)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        seeds, paths = parse_seeds(args.seeds), notebooks(args.nb)
    except ValueError as err:
        ap.error(str(err))
    tasks = [(p, s) for s in seeds for p in paths]
    print(f"seed sweep: {len(paths)} notebooks x {len(seeds)} seeds, {args.jobs} jobs")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_one, str(p), s): (p, s) for p, s in tasks}
        for fut in futures:  # in submission order; merged as each finishes
            p, s = futures[fut]
            entry = fut.result()
            merge(p, s, entry)
            bad = [k for k, f in entry["findings"].items() if not f["held"]]
            print(
                f"{p.stem} seed {s}: {entry['status']} in {entry['seconds']} s"
                + (f", not held: {', '.join(bad)}" if bad else "")
                + (f"\n  {entry['error'][:300]}" if entry["error"] else ""),
                flush=True,
            )
    for p in paths:
        print("\n".join(summary(p)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
