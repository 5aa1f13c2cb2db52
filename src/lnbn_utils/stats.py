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

__all__ = ["t_interval", "bootstrap_ci", "paired_bootstrap_ci", "fmt_ci"]

ArrayLike = Union[Sequence[float], torch.Tensor]

# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


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


def t_interval(samples: ArrayLike) -> tuple[float, tuple[float, float]]:
    """Mean and 95% Student-t interval of the mean, for a few independent runs.

    >>> m, (lo, hi) = t_interval([1.0, 2.0, 3.0])
    >>> m, round(lo, 3), round(hi, 3)
    (2.0, -0.484, 4.484)
    """
    x = _as_1d(samples)
    n = x.numel()
    mean = float(x.mean())
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    half = t * float(x.std(unbiased=True)) / math.sqrt(n)
    return mean, (mean - half, mean + half)


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
    if n_boot < 100:
        raise ValueError(f"expected n_boot >= 100, got {n_boot}")
    stat = stat or (lambda r: r.mean(dim=-1))
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, x.numel(), (n_boot, x.numel()), generator=gen)
    values = stat(x[idx])
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
