"""Findings: empirical claims with a control, an interval and a threshold, asserted.

A *check* is an identity or an implementation test and stays a plain ``assert``. A
*finding* could have come out otherwise, so it names the control it is compared with,
carries a 95% interval and the batch shape it was measured at, and is tested against a
threshold by its whole interval, not by its point estimate::

    lu.finding("demo_gap", claim=0, statement="A demo gap is positive", value=0.5,
               ci=(0.2, 0.8), control=0.0, control_label="no effect",
               expect=">", threshold=0.1, shape="B=4, T=8", ci_source="5 seeds")

Each finding is glued for the prose (``key``, ``key_ci``, ``key_control``) and as a
record (``key__record``) from which the book's evidence ledger page is generated.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Optional, Union

from .glue import glue
from .stats import fmt_ci

__all__ = ["Finding", "finding", "strict_timing", "recorded_findings"]

Threshold = Union[float, tuple[float, float]]


class _Text(str):
    """A string that displays without quotes, so ``{glue:text}`key_ci``` reads well."""

    def __repr__(self) -> str:
        return str(self)


_RECORDED: dict[str, "Finding"] = {}


@dataclass(frozen=True)
class Finding:
    """One finding as the ledger lists it."""

    key: str
    claim: int
    statement: str
    value: float
    ci: Optional[tuple[float, float]]
    control: Optional[float]
    control_label: str
    expect: str
    threshold: Threshold
    unit: str
    shape: str
    ci_source: str
    timing: bool

    def passed(self) -> bool:
        """Whether the interval (or the value, if none) clears the threshold."""
        lo, hi = self.ci if self.ci is not None else (self.value, self.value)
        if self.expect == ">":
            return lo > self.threshold
        if self.expect == "<":
            return hi < self.threshold
        a, b = self.threshold
        return a <= lo and hi <= b

    def describe(self) -> str:
        shown = fmt_ci(self.value, self.ci) if self.ci else f"{self.value:.3g}"
        want = (
            f"inside [{self.threshold[0]:.3g}, {self.threshold[1]:.3g}]"
            if self.expect == "within"
            else f"{self.expect} {self.threshold:.3g}"
        )
        return f"{self.key}: {self.statement}: {shown} {self.unit}, expected {want}"


def strict_timing() -> bool:
    """True when ``LNBN_STRICT_TIMING=1``: timing findings then fail instead of warn."""
    return os.environ.get("LNBN_STRICT_TIMING", "0") == "1"


def _number(name: str, v: object) -> float:
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        and not hasattr(v, "item")
    ):
        raise TypeError(f"expected {name} to be a number, got {type(v).__name__}")
    f = float(v)  # accepts 0-d tensors and numpy scalars
    if not math.isfinite(f):
        raise ValueError(f"expected a finite {name}, got {f}")
    return f


def _check_threshold(expect: str, threshold: object) -> Threshold:
    if expect in (">", "<"):
        return _number("threshold", threshold)
    if expect == "within":
        if not isinstance(threshold, (tuple, list)) or len(threshold) != 2:
            raise ValueError(
                f"expected threshold=(a, b) for 'within', got {threshold!r}"
            )
        a, b = (_number("threshold", t) for t in threshold)
        if a > b:
            raise ValueError(f"expected threshold a <= b, got ({a}, {b})")
        return (a, b)
    raise ValueError(f"expected expect '>', '<' or 'within', got {expect!r}")


def _check_ci(value: float, ci: object) -> Optional[tuple[float, float]]:
    if ci is None:
        return None
    if not isinstance(ci, (tuple, list)) or len(ci) != 2:
        raise ValueError(f"expected ci=(lo, hi), got {ci!r}")
    lo, hi = (_number("ci bound", c) for c in ci)
    if not lo <= hi:
        raise ValueError(f"expected ci lo <= hi, got ({lo}, {hi})")
    return (lo, hi)


def finding(
    key: str,
    *,
    claim: int,
    statement: str,
    value: float,
    ci: Optional[tuple[float, float]],
    control: Optional[float],
    control_label: str,
    expect: str,
    threshold: Threshold,
    unit: str = "",
    shape: str = "",
    ci_source: str = "",
    timing: bool = False,
) -> None:
    """Assert a finding, glue it for the prose and record it for the evidence ledger.

    Args:
        key: stable identifier, also the glue name of ``value``.
        claim: the chapter / claim number it bears on (0-6).
        statement: the claim in one line.
        value, ci: the measurement and its 95% interval (``None`` only for a
            measurement without sampling variance, which the ledger says).
        control, control_label: the named control's value and what it is.
        expect, threshold: ``">"``/``"<"``: the whole interval must clear
            ``threshold``; ``"within"``: the interval must lie inside ``(a, b)``.
        unit, shape, ci_source: the unit, the batch shape measured at, and what the
            interval is over ("5 seeds", "paired bootstrap over 512 sequences").
        timing: a wall-clock finding: it only warns on failure unless
            ``LNBN_STRICT_TIMING=1`` (set by ``make test``), since another CPU or
            torch build may legitimately differ.

    Raises:
        AssertionError: the finding does not hold (or a timing finding under strict
            timing).
    """
    if not isinstance(key, str) or not key.isidentifier():
        raise ValueError(
            f"expected a finding key that is a Python identifier, got {key!r}"
        )
    if isinstance(claim, bool) or not isinstance(claim, int) or not 0 <= claim <= 6:
        raise ValueError(f"expected claim to be an int in 0..6, got {claim!r}")
    if not statement or not control_label:
        raise ValueError("expected a non-empty statement and control_label")
    v = _number("value", value)
    f = Finding(
        key=key,
        claim=claim,
        statement=statement,
        value=v,
        ci=_check_ci(v, ci),
        control=None if control is None else _number("control", control),
        control_label=control_label,
        expect=expect,
        threshold=_check_threshold(expect, threshold),
        unit=unit,
        shape=shape,
        ci_source=ci_source,
        timing=bool(timing),
    )
    _RECORDED[key] = f
    glue(key, f.value)
    glue(key + "_ci", _Text(fmt_ci(f.value, f.ci) if f.ci else f"{f.value:.3g}"))
    if f.control is not None:
        glue(key + "_control", f.control)
    glue(key + "__record", json.dumps({**asdict(f), "passed": f.passed()}))
    if f.passed():
        return
    if f.timing and not strict_timing():
        warnings.warn(f"timing finding did not hold on this machine: {f.describe()}")
        return
    raise AssertionError(f"finding does not hold: {f.describe()}")


def recorded_findings() -> list[Finding]:
    """The findings recorded so far in this process (a notebook's kernel)."""
    return list(_RECORDED.values())
