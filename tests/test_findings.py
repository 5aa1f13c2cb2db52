"""lu.finding: asserts on the whole interval, glues, records; timing findings warn."""

import json

import pytest

import lnbn_utils as lu

BASE = dict(claim=1, statement="s", control=0.0, control_label="LayerNorm", unit="u")
VS = ("LayerNorm", 0.0)


def test_a_finding_passes_when_its_whole_interval_clears_the_threshold():
    lu.finding("ch1_pass", value=0.5, ci=(0.2, 0.8), expect=">", threshold=0.1, **BASE)
    lu.finding(
        "ch1_less", "s", lu.Interval(0.5, 0.2, 0.8), vs=VS, expect="<", threshold=0.9
    )
    lu.finding(
        "ch1_in",
        "s",
        (0.0, (-0.1, 0.1)),
        vs="LN",
        expect="within",
        threshold=(-0.2, 0.2),
    )
    assert {f.key for f in lu.recorded_findings()} >= {"ch1_pass", "ch1_less", "ch1_in"}


@pytest.mark.parametrize(
    "value, ci, expect, threshold",
    [
        (0.5, (0.05, 0.8), ">", 0.1),  # point estimate clears, interval does not
        (0.5, (0.2, 0.95), "<", 0.9),
        (0.0, (-0.3, 0.1), "within", (-0.2, 0.2)),
        (0.05, None, ">", 0.1),
    ],
)
def test_a_broken_finding_fails(value, ci, expect, threshold):
    est = value if ci is None else lu.Interval(value, *ci)
    with pytest.raises(AssertionError, match="finding does not hold"):
        lu.finding("ch1_fail", "s", est, vs=VS, expect=expect, threshold=threshold)


def test_timing_findings_warn_unless_strict(monkeypatch):
    kw = dict(vs=VS, expect="<", threshold=1.0, timing=True)
    est = lu.Interval(2.0, 1.5, 2.5)
    monkeypatch.setenv("LNBN_STRICT_TIMING", "0")
    with pytest.warns(UserWarning, match="timing finding"):
        lu.finding("ch4_time", "s", est, **kw)
    monkeypatch.setenv("LNBN_STRICT_TIMING", "1")
    with pytest.raises(AssertionError):
        lu.finding("ch4_time", "s", est, **kw)


def test_the_sweep_log_records_every_finding_and_failures_only_warn(
    monkeypatch, tmp_path
):
    log = tmp_path / "sweep.jsonl"
    monkeypatch.setenv("LNBN_SWEEP_LOG", str(log))
    lu.finding(
        "ch2_ok", "s", lu.Interval(0.5, 0.2, 0.8), vs=VS, expect=">", threshold=0
    )
    with pytest.warns(UserWarning, match="did not hold"):
        lu.finding(
            "ch2_no", "s", lu.Interval(0.5, 0.2, 0.8), vs=VS, expect="<", threshold=0
        )
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["key"], r["passed"]) for r in rows] == [
        ("ch2_ok", True),
        ("ch2_no", False),
    ]


def test_the_record_is_glued_as_json(monkeypatch):
    glued = {}
    monkeypatch.setattr(
        "lnbn_utils.findings.glue", lambda k, v: glued.__setitem__(k, v)
    )
    with lu.finding_defaults(unit="nats", shape="B=4"):
        lu.finding(
            "ch1_rec",
            "s",
            lu.t_interval([0.4, 0.5, 0.6], source="3 seeds"),
            vs=VS,
            expect=">",
            threshold=0.1,
            why="no effect",
        )
    assert glued["ch1_rec"] == pytest.approx(0.5) and glued["ch1_rec_control"] == 0.0
    record = json.loads(glued["ch1_rec__record"])
    assert record["claim"] == 1 and record["passed"] and record["why"] == "no effect"
    assert record["unit"] == "nats" and record["shape"] == "B=4"
    assert record["ci_source"] == "3 seeds"
    lo, hi = record["ci"]
    assert record["margin"] == pytest.approx((lo - 0.1) / (hi - lo))
    lu.finding("ch1_rec2", "s", 0.5, vs=VS, expect=">", threshold=0.1)
    record = json.loads(glued["ch1_rec2__record"])
    assert record["unit"] == "" and record["ci"] is None and record["margin"] is None


def test_defaults_persist_when_called_and_restore_after_with():
    lu.finding_defaults(unit="a", shape="b")
    with lu.finding_defaults(unit="c"):
        lu.finding("ch0_d1", "s", 1.0, vs="x", expect=">", threshold=0)
    lu.finding("ch0_d2", "s", 1.0, vs="x", expect=">", threshold=0)
    found = {f.key: f for f in lu.recorded_findings()}
    assert (found["ch0_d1"].unit, found["ch0_d1"].shape) == ("c", "b")
    assert (found["ch0_d2"].unit, found["ch0_d2"].shape) == ("a", "b")
    lu.finding_defaults(unit="", shape="")


@pytest.mark.parametrize(
    "kw, err",
    [
        (dict(key="not an id"), ValueError),
        (dict(key="t_no_chapter"), ValueError),
        (dict(key="ch9_x"), ValueError),
        (dict(claim=3), ValueError),  # disagrees with the key
        (dict(value=float("nan")), ValueError),
        (dict(value="big"), TypeError),
        (dict(ci=(0.8, 0.2)), ValueError),
        (dict(ci=(0.1,)), ValueError),
        (dict(expect="=="), ValueError),
        (dict(expect="within", threshold=0.1), ValueError),
        (dict(threshold=float("inf")), ValueError),
        (dict(control_label=""), ValueError),
        (dict(timing="no"), TypeError),
    ],
)
def test_bad_input(kw, err):
    args = dict(
        key="ch1_bad", value=0.5, ci=(0.2, 0.8), expect=">", threshold=0.1, **BASE
    )
    args.update(kw)
    key = args.pop("key")
    with pytest.raises(err):
        lu.finding(key, **args)


@pytest.mark.parametrize(
    "est, vs, err",
    [
        (None, VS, TypeError),
        ([0.1, 0.2, 0.3], VS, TypeError),
        ((0.5, (0.8, 0.2)), VS, ValueError),
        (0.5, None, TypeError),
        (0.5, ("", 1.0), ValueError),
        (0.5, ("LN", float("nan")), ValueError),
    ],
)
def test_bad_compact_input(est, vs, err):
    with pytest.raises(err):
        lu.finding("ch1_bad", "s", est, vs=vs, expect=">", threshold=0.1)


def test_intervals_refuse_reversed_or_nonfinite_bounds():
    with pytest.raises(ValueError):
        lu.Interval(0.5, 0.8, 0.2)
    with pytest.raises(ValueError):
        lu.Interval(0.5, float("-inf"), 0.2)
    with pytest.raises(TypeError):
        lu.Interval("a", 0, 1)
