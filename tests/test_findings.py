"""lu.finding: asserts on the whole interval, glues, records; timing findings warn."""

import json

import pytest

import lnbn_utils as lu

BASE = dict(claim=1, statement="s", control=0.0, control_label="LayerNorm", unit="u")


def test_a_finding_passes_when_its_whole_interval_clears_the_threshold():
    lu.finding("t_pass", value=0.5, ci=(0.2, 0.8), expect=">", threshold=0.1, **BASE)
    lu.finding("t_less", value=0.5, ci=(0.2, 0.8), expect="<", threshold=0.9, **BASE)
    lu.finding(
        "t_in",
        value=0.0,
        ci=(-0.1, 0.1),
        expect="within",
        threshold=(-0.2, 0.2),
        **BASE,
    )
    assert {f.key for f in lu.recorded_findings()} >= {"t_pass", "t_less", "t_in"}


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
    with pytest.raises(AssertionError, match="finding does not hold"):
        lu.finding(
            "t_fail", value=value, ci=ci, expect=expect, threshold=threshold, **BASE
        )


def test_timing_findings_warn_unless_strict(monkeypatch):
    kw = dict(value=2.0, ci=(1.5, 2.5), expect="<", threshold=1.0, timing=True, **BASE)
    monkeypatch.setenv("LNBN_STRICT_TIMING", "0")
    with pytest.warns(UserWarning, match="timing finding"):
        lu.finding("t_time", **kw)
    monkeypatch.setenv("LNBN_STRICT_TIMING", "1")
    with pytest.raises(AssertionError):
        lu.finding("t_time", **kw)


def test_the_record_is_glued_as_json(monkeypatch):
    glued = {}
    monkeypatch.setattr(
        "lnbn_utils.findings.glue", lambda k, v: glued.__setitem__(k, v)
    )
    lu.finding("t_rec", value=0.5, ci=(0.2, 0.8), expect=">", threshold=0.1, **BASE)
    assert glued["t_rec"] == 0.5 and glued["t_rec_ci"] == "0.5 [0.2, 0.8]"
    assert glued["t_rec_control"] == 0.0
    record = json.loads(glued["t_rec__record"])
    assert record["claim"] == 1 and record["passed"] and record["ci"] == [0.2, 0.8]


@pytest.mark.parametrize(
    "kw, err",
    [
        (dict(key="not an id"), ValueError),
        (dict(claim=9), ValueError),
        (dict(claim=True), ValueError),
        (dict(value=float("nan")), ValueError),
        (dict(value="big"), TypeError),
        (dict(ci=(0.8, 0.2)), ValueError),
        (dict(ci=(0.1,)), ValueError),
        (dict(expect="=="), ValueError),
        (dict(expect="within", threshold=0.1), ValueError),
        (dict(control_label=""), ValueError),
    ],
)
def test_bad_input(kw, err):
    args = dict(
        key="t_bad", value=0.5, ci=(0.2, 0.8), expect=">", threshold=0.1, **BASE
    )
    args.update(kw)
    key = args.pop("key")
    with pytest.raises(err):
        lu.finding(key, **args)
