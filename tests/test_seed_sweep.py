"""The seed sweep tool and the ledger's "held at k of n" column, on tiny notebooks."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import seed_sweep  # noqa: E402


def _ledger():
    spec = importlib.util.spec_from_file_location(
        "evidence_ledger", ROOT / "book/_ext/evidence_ledger.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _notebook(path: Path, *sources: str) -> Path:
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
         "source": s, "id": f"c{i}"}
        for i, s in enumerate(sources)
    ]  # fmt: skip
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4,
          "nbformat_minor": 5}  # fmt: skip
    path.write_text(json.dumps(nb))
    return path


FINDINGS = """import os
import lnbn_utils as lu
seed = int(os.environ["LNBN_SEED"])
lu.finding("ch1_always", "holds", lu.Interval(1.0, 0.5, 1.5), vs="none",
           expect=">", threshold=0.0)
lu.finding("ch1_odd", "holds at even seeds", lu.Interval(1.0, 0.5, 1.5), vs="none",
           expect="<" if seed % 2 else ">", threshold=0.0)
assert seed != 3, "a check that fails at seed 3"
"""


@pytest.mark.parametrize(
    "spec, seeds",
    [("0-3", [0, 1, 2, 3]), ("0 1  2", [0, 1, 2]), ("5,1-2", [1, 2, 5]), ("7", [7])],
)
def test_seed_specs(spec, seeds):
    assert seed_sweep.parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec", ["", "a", "1..3", "3-1", "-2", "1.5"])
def test_an_unknown_seed_spec_is_refused(spec):
    with pytest.raises(ValueError, match="seed"):
        seed_sweep.parse_seeds(spec)


def test_an_unknown_notebook_is_refused():
    with pytest.raises(ValueError, match="notebook"):
        seed_sweep.notebooks(["no_such_chapter"])


def test_the_sweep_records_findings_errors_and_the_ledger_counts_them(tmp_path):
    nb = _notebook(tmp_path / "x.ipynb", FINDINGS)
    out = tmp_path / "book" / "data" / "seed_sweep"
    for seed in (0, 1, 2, 3):
        seed_sweep.merge(nb, seed, seed_sweep.run_one(str(nb), seed), out)
    data = json.loads((out / "x.json").read_text())
    assert list(data["seeds"]) == ["0", "1", "2", "3"]
    assert data["seeds"]["3"]["status"] == "error"
    assert "a check that fails at seed 3" in data["seeds"]["3"]["error"]
    assert data["seeds"]["1"]["findings"]["ch1_odd"]["held"] is False
    (tmp_path / "tools").mkdir()
    shutil.copy(ROOT / "tools/seed_sweep.py", tmp_path / "tools")
    texts = _ledger().sweep_texts(tmp_path, "x", nb)
    assert texts["ch1_always"].startswith("4/4 base seeds")
    assert texts["ch1_odd"].startswith("2/4 base seeds; worst: seed 1")
    assert "error at seed 3" in texts["ch1_odd"]
    _notebook(nb, FINDINGS + "\n# an edit\n")  # new code: the sweep is stale
    assert set(_ledger().sweep_texts(tmp_path, "x", nb).values()) == {"sweep stale"}
