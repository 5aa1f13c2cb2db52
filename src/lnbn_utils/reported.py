"""Reported, not asserted: glue text for a measurement that is not a finding."""

from __future__ import annotations

from .stats import Interval, fmt_ci

__all__ = ["as_text", "ci_text"]


class _Text(str):
    """A string that displays without quotes in ``{glue:text}``."""

    def __repr__(self) -> str:
        return str(self)


def as_text(text: str) -> str:
    """``text`` as a string that ``{glue:text}`` shows without quotes.

    Example:
        >>> lu.glue("ch1_note", lu.as_text("no leak is detectable"))  # doctest: +SKIP
    """
    if not isinstance(text, str):
        raise TypeError(f"expected text as a str, got {type(text).__name__}")
    return _Text(text)


def ci_text(iv: Interval, fmt: str = ".3g") -> str:
    """``"value [lo, hi]"`` of ``iv``, for glueing a measurement reported, not asserted.

    For a measurement the prose quotes with its interval but that is not a finding
    (no threshold: it could not reach the book's robustness standard, or it tests
    no claim).

    Example:
        >>> print(ci_text(Interval(0.5, 0.2, 0.8)))
        0.5 [0.2, 0.8]
    """
    if not isinstance(iv, Interval):
        raise TypeError(f"expected an lu.Interval, got {type(iv).__name__}")
    return as_text(fmt_ci(iv.value, iv.ci, fmt))
