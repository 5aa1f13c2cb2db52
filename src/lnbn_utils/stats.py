"""Intervals for findings: Student-t over seeds, bootstrap over evaluation data.

Which interval fits depends on where the variance comes from. When a training run is
the unit of variation, repeat it over seeds and use :func:`t_interval` (a handful of
seeds is too few for a bootstrap). When one model is evaluated on many sequences, use
:func:`bootstrap_ci`, or :func:`paired_bootstrap_ci` when two models are scored on the
same sequences (pairing removes the sequences' own difficulty from the comparison).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch

__all__ = [
    "Interval",
    "t_interval",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "bootstrap_interval",
    "paired_bootstrap_interval",
    "clopper_pearson_interval",
    "fmt_ci",
]

ArrayLike = Union[Sequence[float], torch.Tensor]

# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def _finite(name: str, v: object) -> float:
    if isinstance(v, bool) or not (isinstance(v, (int, float)) or hasattr(v, "item")):
        raise TypeError(f"expected {name} to be a number, got {type(v).__name__}")
    f = float(v)  # accepts 0-d tensors and numpy scalars
    if not math.isfinite(f):
        raise ValueError(f"expected a finite {name}, got {f}")
    return f


class Interval(tuple):
    """A measured value with its 95% interval and what the interval is over.

    Unpacks as ``value, (lo, hi)``, so ``m, ci = lu.t_interval(x)`` keeps working.

    >>> iv = Interval(0.5, 0.2, 0.8, source="5 seeds, paired")
    >>> iv.value, iv.lo, iv.hi, iv.source
    (0.5, 0.2, 0.8, '5 seeds, paired')
    >>> m, (lo, hi) = iv
    """

    def __new__(
        cls, value: float, lo: float, hi: float, source: str = "", n: int = 0
    ) -> "Interval":
        v, a, b = _finite("value", value), _finite("lo", lo), _finite("hi", hi)
        if not a <= b:
            raise ValueError(f"expected an interval with lo <= hi, got ({a}, {b})")
        if not isinstance(source, str):
            raise TypeError(f"expected source as a str, got {type(source).__name__}")
        self = super().__new__(cls, (v, (a, b)))
        self.value, self.lo, self.hi, self.source, self.n = v, a, b, source, n
        return self

    @property
    def ci(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    def __repr__(self) -> str:
        return f"Interval({fmt_ci(self.value, self.ci)}, source={self.source!r})"


def _t975(dof: int) -> float:
    """Two-sided 95% quantile of Student's t (table to 30, Cornish-Fisher beyond)."""
    if dof <= len(_T975):
        return _T975[dof - 1]
    z, v = 1.959963984540054, float(dof)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


def _as_1d(samples: ArrayLike, name: str = "samples", min_len: int = 2) -> torch.Tensor:
    if isinstance(samples, (str, bytes)) or not hasattr(samples, "__len__"):
        raise TypeError(f"expected {name} as a sequence of numbers, got {samples!r}")
    try:
        x = torch.as_tensor(samples, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"expected {name} as a sequence of numbers: {err}") from None
    if x.numel() < min_len:
        raise ValueError(f"expected at least {min_len} {name}, got {x.numel()}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"expected finite {name}, got {x.tolist()}")
    return x


def _check_level(level: float) -> None:
    if not 0.5 <= level < 1:
        raise ValueError(f"expected a confidence level in [0.5, 1), got {level}")


def t_interval(samples: ArrayLike, source: str = "") -> Interval:
    """Mean and 95% Student-t interval of the mean, for a few independent runs.

    ``source`` says what the samples are ("5 seeds, paired"); the default names the
    method and n.

    >>> m, (lo, hi) = t_interval([1.0, 2.0, 3.0])
    >>> m, round(lo, 3), round(hi, 3)
    (2.0, -0.484, 4.484)
    """
    x = _as_1d(samples)
    n = x.numel()
    mean = float(x.mean())
    half = _t975(n - 1) * float(x.std(unbiased=True)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, source or f"Student t, n={n}", n)


def bootstrap_ci(
    samples: ArrayLike,
    stat: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` (default: the mean) over ``samples``.

    ``stat`` maps a (n_boot, n) tensor of resamples to (n_boot,) statistics.
    Seeded, so the same data always give the same interval.
    """
    x = _as_1d(samples)
    _check_level(level)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TypeError(f"expected seed as an int >= 0, got {seed!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int):
        raise TypeError(f"expected n_boot as an int, got {n_boot!r}")
    if n_boot < 100:
        raise ValueError(f"expected n_boot >= 100, got {n_boot}")
    stat = stat or (lambda r: r.mean(dim=-1))
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, x.numel(), (n_boot, x.numel()), generator=gen)
    values = torch.as_tensor(stat(x[idx])).to(torch.float64)
    if values.shape != (n_boot,):
        raise ValueError(
            f"expected stat to return shape ({n_boot},), got {values.shape}"
        )
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=values.dtype)
    lo, hi = torch.quantile(values, q).tolist()
    return lo, hi


def paired_bootstrap_ci(
    a: ArrayLike,
    b: ArrayLike,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of mean(a - b), resampling the pairs (a[i], b[i]) together."""
    xa, xb = _as_1d(a, "a"), _as_1d(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(
            f"expected paired samples of equal length, got {len(xa)}, {len(xb)}"
        )
    return bootstrap_ci(xa - xb, n_boot=n_boot, level=level, seed=seed)


def fmt_ci(value: float, ci: tuple[float, float], fmt: str = ".3g") -> str:
    """Format a value and its interval as ``0.62 [0.55, 0.71]``."""
    lo, hi = ci
    return f"{value:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _statistic(x: torch.Tensor, stat) -> float:
    if stat is None:
        return float(x.mean())
    value = torch.as_tensor(stat(x[None])).to(torch.float64)
    if value.numel() != 1:
        raise ValueError(f"expected stat to return one value per resample, got {value}")
    return float(value)


def bootstrap_interval(
    samples: ArrayLike,
    stat: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    n_boot: int = 2000,
    seed: int = 0,
    source: str = "",
) -> Interval:
    """``stat`` of ``samples`` (default: the mean) with its 95% percentile bootstrap.

    >>> iv = bootstrap_interval([1.0, 2.0, 3.0, 4.0])
    >>> iv.value, iv.lo <= 2.5 <= iv.hi
    (2.5, True)
    """
    x = _as_1d(samples)
    lo, hi = bootstrap_ci(x, stat, n_boot=n_boot, seed=seed)
    value = _statistic(x, stat)
    n = x.numel()
    return Interval(
        value, min(lo, value), max(hi, value), source or f"bootstrap, n={n}", n
    )


def paired_bootstrap_interval(
    a: ArrayLike, b: ArrayLike, n_boot: int = 2000, seed: int = 0, source: str = ""
) -> Interval:
    """mean(a - b) with a bootstrap interval that resamples the pairs together."""
    xa, xb = _as_1d(a, "a"), _as_1d(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(
            f"expected paired samples of equal length, got {len(xa)}, {len(xb)}"
        )
    n = xa.numel()
    return bootstrap_interval(
        xa - xb, n_boot=n_boot, seed=seed, source=source or f"paired bootstrap, n={n}"
    )


def _binom_cdf(j: int, n: int, p: float) -> float:
    """P(X <= j) for X ~ Binomial(n, p); falls as p grows."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(j + 1))


def _falling_root(f: Callable[[float], float]) -> float:
    """Where a function that falls on [0, 1] crosses 0 (bisection)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


def clopper_pearson_interval(k: int, n: int, source: str = "") -> Interval:
    """Share ``k / n`` with its exact (Clopper-Pearson) 95% interval.

    >>> iv = clopper_pearson_interval(0, 10)
    >>> iv.value, iv.lo, round(iv.hi, 2)
    (0.0, 0.0, 0.31)
    """
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"expected {name} as an int, got {v!r}")
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"expected 0 <= k <= n and n >= 1, got k={k}, n={n}")
    lo = 0.0 if k == 0 else _falling_root(lambda p: _binom_cdf(k - 1, n, p) - 0.975)
    hi = 1.0 if k == n else _falling_root(lambda p: _binom_cdf(k, n, p) - 0.025)
    return Interval(k / n, lo, hi, source or f"Clopper-Pearson, n={n}", n)
