import pytest

import lnbn_utils as lu


def test_ci_text_shows_value_and_interval_without_quotes():
    text = lu.ci_text(lu.Interval(0.5, 0.2, 0.8))
    assert text == "0.5 [0.2, 0.8]" and repr(text) == "0.5 [0.2, 0.8]"


def test_ci_text_refuses_a_bare_pair():
    with pytest.raises(TypeError, match="lu.Interval"):
        lu.ci_text((0.5, (0.2, 0.8)))


def test_as_text_refuses_a_number():
    with pytest.raises(TypeError, match="str"):
        lu.as_text(0.5)
