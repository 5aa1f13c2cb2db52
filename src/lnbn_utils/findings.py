"""Findings: empirical claims with a control, an interval and a threshold, asserted.

A *check* is an identity or an implementation test and stays a plain ``assert``. A
*finding* could have come out otherwise, so it names the control it is compared with,
carries a 95% interval and the batch shape it was measured at, and is tested against a
threshold by its whole interval, not by its point estimate. A finding is one call::

    lu.finding_defaults(unit="nats/char", shape="B=8 x T=32, 5 seeds")
    lu.finding("ch3_bn_minus_ln", "BN is no worse than LN at its best lr",
               lu.t_interval(bn - ln), vs=("LayerNorm", ln.mean()),
               expect="<", threshold=0.1, why="margin set from the design")

The chapter comes from the key's ``chN_`` prefix; the interval object
(:class:`lnbn_utils.stats.Interval`) carries its bounds and what it is over. Each
finding is glued for the prose (``key``, ``key_ci``, ``key_control``) and as a record
(``key__record``) from which the book's evidence ledger page is generated. With
``LNBN_SWEEP_LOG`` set (the seed sweep, ``tools/seed_sweep.py``) a finding that does
not hold is recorded in that file instead of raising, so one sweep sees them all.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import asdict, dataclass
from typing import Optional, Union

from .glue import glue
from .stats import Interval, fmt_ci

__all__ = [
    "Finding",
    "finding",
    "finding_defaults",
    "strict_timing",
    "recorded_findings",
]

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
    why: str = ""

    def margin(self) -> Optional[float]:
        """Distance of the interval from the threshold, in interval widths."""
        if self.ci is None or self.ci[1] == self.ci[0]:
            return None
        lo, hi = self.ci
        if self.expect == ">":
            gap = lo - self.threshold
        elif self.expect == "<":
            gap = self.threshold - hi
        else:
            gap = min(lo - self.threshold[0], self.threshold[1] - hi)
        return gap / (hi - lo)

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


KEY = re.compile(r"ch([0-6])_\w+")
_DEFAULTS: dict[str, str] = {"unit": "", "shape": ""}


class finding_defaults:
    """Set the ``unit`` and ``shape`` of the findings that follow (a section's batch).

    Calling it sets them for the rest of the notebook; ``with lu.finding_defaults(...)``
    sets them for the block only.
    """

    def __init__(self, unit: Optional[str] = None, shape: Optional[str] = None):
        self._saved = dict(_DEFAULTS)
        for name, v in (("unit", unit), ("shape", shape)):
            if v is not None:
                if not isinstance(v, str):
                    raise TypeError(f"expected {name} as a str, got {v!r}")
                _DEFAULTS[name] = v

    def __enter__(self) -> "finding_defaults":
        return self

    def __exit__(self, *exc: object) -> None:
        _DEFAULTS.clear()
        _DEFAULTS.update(self._saved)


def _estimate(est: object) -> tuple[float, Optional[tuple[float, float]], str]:
    """(value, ci, source) of an Interval, a (value, (lo, hi)) pair, or a number."""
    if isinstance(est, Interval):
        return est.value, est.ci, est.source
    if isinstance(est, tuple) and len(est) == 2 and isinstance(est[1], (tuple, list)):
        v = _number("value", est[0])
        return v, _check_ci(v, est[1]), ""
    if isinstance(est, (tuple, list)):
        raise TypeError(
            f"expected an lu.Interval, (value, (lo, hi)) or a number, got {est!r}"
        )
    return _number("value", est), None, "exact (no sampling variance)"


def _control(vs: object) -> tuple[str, Optional[float]]:
    if isinstance(vs, str) and vs:
        return vs, None
    if isinstance(vs, (tuple, list)) and len(vs) == 2 and isinstance(vs[0], str):
        if not vs[0]:
            raise ValueError("expected a non-empty control label in vs")
        return vs[0], (None if vs[1] is None else _number("control", vs[1]))
    raise TypeError(f"expected vs='label' or vs=('label', value), got {vs!r}")


def _sweep_log(f: Finding) -> None:
    path = os.environ.get("LNBN_SWEEP_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({**asdict(f), "passed": f.passed()}) + "\n")


def finding(
    key: str,
    statement: Optional[str] = None,
    est: object = None,
    *,
    vs: object = None,
    expect: Optional[str] = None,
    threshold: Optional[Threshold] = None,
    unit: Optional[str] = None,
    shape: Optional[str] = None,
    why: str = "",
    timing: bool = False,
    claim: Optional[int] = None,
    value: Optional[float] = None,
    ci: Optional[tuple[float, float]] = None,
    control: Optional[float] = None,
    control_label: Optional[str] = None,
    ci_source: Optional[str] = None,
) -> None:
    """Assert a finding, glue it for the prose and record it for the evidence ledger.

    Args:
        key: ``chN_name``: the chapter N (0-6) and the glue name of the value.
        statement: the claim in one line.
        est: the measurement: an :class:`~lnbn_utils.stats.Interval` (from
            ``lu.t_interval``, ``lu.bootstrap_interval``, ...), a ``(value, (lo,
            hi))`` pair, or a number for a measurement without sampling variance.
        vs: the named control, ``(label, value)`` or ``label``.
        expect, threshold: ``">"``/``"<"``: the whole interval must clear
            ``threshold``; ``"within"``: the interval must lie inside ``(a, b)``.
        unit, shape: default to :class:`finding_defaults`.
        why: why this threshold, in a short phrase ("no effect", "half LN's gain").
        timing: a wall-clock finding: it only warns on failure unless
            ``LNBN_STRICT_TIMING=1``, since another CPU may legitimately differ.
        claim, value, ci, control, control_label, ci_source: the keyword form
            (``claim`` must agree with the key's prefix).

    Raises:
        AssertionError: the finding does not hold (or a timing finding under strict
            timing); with ``LNBN_SWEEP_LOG`` set it warns instead.
        TypeError, ValueError: an argument of the wrong type or value.
    """
    m = KEY.fullmatch(key) if isinstance(key, str) else None
    if m is None:
        raise ValueError(f"expected a key 'chN_name' with N in 0..6, got {key!r}")
    if claim is not None and claim != int(m.group(1)):
        raise ValueError(f"expected claim={m.group(1)} as in the key, got {claim!r}")
    if not isinstance(timing, bool):
        raise TypeError(f"expected timing as a bool, got {timing!r}")
    if expect not in (">", "<", "within"):
        raise ValueError(f"expected expect '>', '<' or 'within', got {expect!r}")
    if not isinstance(statement, str) or not statement:
        raise ValueError(f"expected a non-empty statement, got {statement!r}")
    if value is not None:  # keyword form
        if est is not None or vs is not None:
            raise TypeError("expected either est/vs or value/ci/control, not both")
        v = _number("value", value)
        est = (v, ci) if ci is not None else v
        vs = (control_label, control)
    elif est is None:
        raise TypeError("expected a measurement: est (an lu.Interval or a number)")
    v, interval, source = _estimate(est)
    label, ctrl = _control(vs)
    if not isinstance(why, str):
        raise TypeError(f"expected why as a str, got {why!r}")
    f = Finding(
        key=key,
        claim=int(m.group(1)),
        statement=statement,
        value=v,
        ci=interval,
        control=ctrl,
        control_label=label,
        expect=expect,
        threshold=_check_threshold(expect, threshold),
        unit=_DEFAULTS["unit"] if unit is None else unit,
        shape=_DEFAULTS["shape"] if shape is None else shape,
        ci_source=ci_source if ci_source is not None else source,
        timing=timing,
        why=why,
    )
    _RECORDED[key] = f
    glue(key, f.value)
    glue(key + "_ci", _Text(fmt_ci(f.value, f.ci) if f.ci else f"{f.value:.3g}"))
    if f.control is not None:
        glue(key + "_control", f.control)
    record = {**asdict(f), "passed": f.passed(), "margin": f.margin()}
    glue(key + "__record", json.dumps(record))
    _sweep_log(f)
    if f.passed():
        return
    if (f.timing and not strict_timing()) or os.environ.get("LNBN_SWEEP_LOG"):
        kind = "timing finding" if f.timing else "finding"
        warnings.warn(f"{kind} did not hold on this run: {f.describe()}")
        return
    raise AssertionError(f"finding does not hold: {f.describe()}")


def recorded_findings() -> list[Finding]:
    """The findings recorded so far in this process (a notebook's kernel)."""
    return list(_RECORDED.values())
