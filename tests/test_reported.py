import pytest

import lnbn_utils as lu


def test_report_returns_the_interval_text():
    assert lu.report("ch1_x", lu.Interval(0.5, 0.2, 0.8)) == "0.5 [0.2, 0.8]"


def test_report_refuses_a_bare_pair():
    with pytest.raises(TypeError, match="lu.Interval"):
        lu.report("ch1_x", (0.5, (0.2, 0.8)))


def test_report_refuses_a_bad_key():
    with pytest.raises(ValueError, match="identifier"):
        lu.report("not a name", lu.Interval(0.5, 0.2, 0.8))


def test_glue_text_refuses_a_number():
    with pytest.raises(TypeError, match="str"):
        lu.glue_text("ch1_x", 0.5)
