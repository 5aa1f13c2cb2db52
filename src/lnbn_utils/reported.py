"""Reported, not asserted: glue a measurement and its interval without a test."""

from __future__ import annotations

from .glue import glue
from .stats import Interval, fmt_ci

__all__ = ["glue_text", "report"]


class _Text(str):
    """A string that displays without quotes in ``{glue:text}``."""

    def __repr__(self) -> str:
        return str(self)


def report(key: str, iv: Interval, fmt: str = ".3g") -> str:
    """Glue ``iv`` as ``key`` (its value) and ``key_ci`` ("value [lo, hi]").

    For a measurement the prose quotes with its interval but that is not a finding
    (no threshold: it could not reach the book's robustness standard, or it has no
    claim to test). Returns the ``key_ci`` text.

    Args:
        key: a glue name (a Python identifier).
        iv: an :class:`~lnbn_utils.stats.Interval` (``lu.t_interval``, ...).
        fmt: the number format of the text.

    Example:
        >>> report("ch1_x", Interval(0.5, 0.2, 0.8))
        '0.5 [0.2, 0.8]'
    """
    if not isinstance(iv, Interval):
        raise TypeError(f"expected an lu.Interval, got {type(iv).__name__}")
    text = _Text(fmt_ci(iv.value, iv.ci, fmt))
    glue(key, iv.value)
    glue(key + "_ci", text)
    return str(text)


def glue_text(key: str, text: str) -> None:
    """Glue ``text`` so that ``{glue:text}`key``` shows it without quotes."""
    if not isinstance(text, str):
        raise TypeError(f"expected text as a str, got {type(text).__name__}")
    glue(key, _Text(text))
