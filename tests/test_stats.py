"""lu.stats: intervals with known answers."""

import math

import pytest
import torch

import lnbn_utils as lu


def test_t_interval_known_answer():
    # n = 3, mean 2, sd 1: half-width t_{0.975, 2} * 1 / sqrt(3) = 4.303 / 1.732
    mean, (lo, hi) = lu.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert math.isclose(hi - mean, 4.303 / math.sqrt(3), rel_tol=1e-4)
    assert math.isclose(mean - lo, hi - mean)


def test_t_interval_covers_the_true_mean_about_95_percent():
    gen = torch.Generator().manual_seed(0)
    hits = 0
    for _ in range(2000):
        _, (lo, hi) = lu.t_interval(torch.randn(5, generator=gen))
        hits += lo <= 0.0 <= hi
    assert 0.93 < hits / 2000 < 0.97, hits


def test_bootstrap_ci_of_the_mean_matches_the_normal_theory_width():
    x = torch.randn(4000, generator=torch.Generator().manual_seed(1))
    lo, hi = lu.bootstrap_ci(x, n_boot=2000, seed=0)
    expected = 2 * 1.96 * float(x.std()) / math.sqrt(len(x))
    assert math.isclose(hi - lo, expected, rel_tol=0.1), (hi - lo, expected)
    assert lo < float(x.mean()) < hi


def test_bootstrap_is_seeded_and_takes_a_statistic():
    x = torch.arange(50.0)
    assert lu.bootstrap_ci(x, seed=3) == lu.bootstrap_ci(x, seed=3)
    lo, hi = lu.bootstrap_ci(x, stat=lambda r: r.median(dim=-1).values)
    assert lo <= 24.5 <= hi


def test_paired_bootstrap_removes_shared_difficulty():
    gen = torch.Generator().manual_seed(2)
    difficulty = 10 * torch.randn(500, generator=gen)
    a = difficulty + 0.1 + 0.01 * torch.randn(500, generator=gen)
    b = difficulty
    lo, hi = lu.paired_bootstrap_ci(a, b)
    assert 0.09 < lo < 0.1 < hi < 0.11
    ulo, uhi = lu.bootstrap_ci(a - 0.0)  # unpaired: the difficulty dominates
    assert uhi - ulo > 100 * (hi - lo)


def test_fmt_ci():
    assert lu.fmt_ci(0.62, (0.55, 0.71)) == "0.62 [0.55, 0.71]"
    assert lu.fmt_ci(1234.5, (1000, 1500), ",.0f") == "1,234 [1,000, 1,500]"


@pytest.mark.parametrize(
    "call, err",
    [
        (lambda: lu.t_interval([1.0]), ValueError),
        (lambda: lu.t_interval([1.0, float("nan")]), ValueError),
        (lambda: lu.t_interval("abc"), TypeError),
        (lambda: lu.bootstrap_ci([1.0, 2.0], level=1.5), ValueError),
        (lambda: lu.bootstrap_ci([1.0, 2.0], n_boot=10), ValueError),
        (lambda: lu.paired_bootstrap_ci([1.0, 2.0], [1.0, 2.0, 3.0]), ValueError),
        (lambda: lu.bootstrap_ci([1.0, 2.0], stat=lambda r: r), ValueError),
    ],
)
def test_bad_input(call, err):
    with pytest.raises(err):
        call()


@pytest.mark.parametrize(
    "n, t", [(31, 2.0423), (33, 2.0369), (41, 2.0211), (121, 1.9799)]
)
def test_t_interval_uses_student_t_beyond_the_table(n, t):
    x = torch.arange(n, dtype=torch.float64)
    iv = lu.t_interval(x)
    half = t * float(x.std()) / n**0.5
    assert iv.hi - iv.value == pytest.approx(half, rel=2e-4)
    assert iv.n == n and "n=" in iv.source


@pytest.mark.parametrize("seed", [None, 1.5, -1, True])
def test_bootstrap_refuses_a_bad_seed(seed):
    with pytest.raises(TypeError, match="seed"):
        lu.bootstrap_ci([1.0, 2.0, 3.0], seed=seed)


def test_bootstrap_accepts_an_integer_statistic():
    lo, hi = lu.bootstrap_ci([1.0, 2.0, 3.0, 4.0], stat=lambda r: (r > 2).sum(-1))
    assert 0 <= lo <= hi <= 4
    iv = lu.bootstrap_interval([1.0, 2.0, 3.0, 4.0], stat=lambda r: (r > 2).sum(-1))
    assert iv.value == 2


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [
        (0, 10, 0.0, 0.3085),
        (3, 10, 0.0667, 0.6525),
        (10, 10, 0.6915, 1.0),
        (5, 20, 0.0866, 0.4910),
    ],
)
def test_clopper_pearson_matches_the_exact_interval(k, n, lo, hi):
    iv = lu.clopper_pearson_interval(k, n)
    assert iv.value == k / n
    assert (iv.lo, iv.hi) == (pytest.approx(lo, abs=1e-4), pytest.approx(hi, abs=1e-4))


@pytest.mark.parametrize("k, n", [(3, 2), (-1, 5), (0, 0), (1.0, 5), (True, 5)])
def test_clopper_pearson_refuses_bad_counts(k, n):
    with pytest.raises((TypeError, ValueError)):
        lu.clopper_pearson_interval(k, n)
