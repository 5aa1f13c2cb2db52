"""The audit report: one result per property and mode, a table, JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

PROPERTIES = ("batch", "batch_size", "causal", "padding", "train_eval")
MODES = ("train", "eval")
SCHEMA_VERSION = 2  # of ``AuditReport.to_dict``


@dataclass
class CheckResult:
    """One measured property in one mode.

    ``change`` is the relative change of the compared outputs (same random state);
    ``floor`` the measured float-noise floor; the property holds when
    ``change <= tol``. ``bitwise`` says whether the outputs were bit-for-bit equal;
    ``inconclusive`` that the change exceeds the tolerance in a model whose
    randomness the audit does not control (neither a pass nor a failure).
    """

    property: str
    mode: str
    change: float
    floor: float
    tol: float
    holds: bool
    uncontrolled: Optional[float] = None
    note: str = ""
    inconclusive: bool = False

    @property
    def bitwise(self) -> bool:
        """Whether the compared outputs were identical bit for bit."""
        return self.change == 0

    @property
    def verdict(self) -> str:
        """A short word for the table.

        A nonzero change is called rounding only when it is within 10x the measured
        floor (the floor is in the table); above that but under ``rtol`` it is real
        but tolerated: "below rtol".
        """
        if self.inconclusive:
            return "inconclusive"
        if not self.holds:
            return "FAILS"
        if self.change == 0:
            return "holds (bitwise)"
        return (
            "holds (within 10x floor)"
            if self.change <= 10 * self.floor
            else "holds (below rtol)"
        )


@dataclass
class AuditReport:
    """What ``audit`` measured: checks per property and mode, and the norm layers."""

    model: str
    checks: list[CheckResult]
    inventory: list[dict]
    shape: str
    causal: bool
    settings: dict = field(default_factory=dict)

    def get(self, prop: str, mode: str) -> CheckResult:
        """The check of ``prop`` (e.g. ``"batch"``, ``"padding:left"``) in ``mode``."""
        for c in self.checks:
            if c.property == prop and c.mode == mode:
                return c
        have = sorted({(c.property, c.mode) for c in self.checks})
        raise KeyError(f"expected one of {have}, got ({prop!r}, {mode!r})")

    def inconclusives(self) -> list[CheckResult]:
        """Checks the audit could not decide (randomness it does not control)."""
        return [c for c in self.checks if c.inconclusive]

    def failures(self, require: Sequence[str] = ()) -> list[CheckResult]:
        """Failures among ``require`` (``"prop"`` or ``"prop:mode"``; empty: all)."""
        if not require:
            return [c for c in self.checks if not c.holds and not c.inconclusive]
        out = []
        for req in require:
            prop, _, mode = (
                req.partition(":") if req.count(":") != 2 else req.rpartition(":")
            )
            if mode and mode not in MODES and mode != "train->eval":
                prop, mode = req, ""
            hits = [
                c
                for c in self.checks
                if (c.property == prop or c.property.startswith(prop + ":"))
                and mode in ("", c.mode)
            ]
            if not hits:
                have = sorted({f"{c.property}:{c.mode}" for c in self.checks})
                raise ValueError(
                    f"expected a measured property (one of {have}), got {req!r}"
                )
            out += [c for c in hits if not c.holds and c not in out]
            out = [c for c in out if not c.inconclusive]
        return out

    def table(self) -> str:
        """A plain-text table of the checks, then the norm inventory."""
        cols = f"{'property':<16}{'mode':<12}{'change':>11}{'floor':>11}"
        head = f"{cols}{'bitwise':>8}{'no RNG ctl':>12}  verdict"
        output = self.settings.get("output", "")
        lines = [
            f"audit of {self.model}  (inputs {self.shape}, causal={self.causal}"
            + (f", output {output})" if output else ")"),
            head,
        ]
        lines.append("-" * len(head))
        for c in self.checks:
            unc = "" if c.uncontrolled is None else f"{c.uncontrolled:.3g}"
            lines.append(
                f"{c.property:<16}{c.mode:<12}{c.change:>11.3g}{c.floor:>11.3g}"
                f"{'yes' if c.bitwise else 'no':>8}{unc:>12}"
                f"  {c.verdict}{'  ' + c.note if c.note else ''}"
            )
        lines.append(
            "norm layers: "
            + (", ".join(_inv_line(r) for r in self.inventory) or "none")
        )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """A JSON-ready dict (what ``--json`` prints), with a ``schema_version``.

        Strict JSON: a non-finite number (a model that returned inf or nan) is
        written as null, and the check gets ``"nonfinite": true``.
        """
        d = {"schema_version": SCHEMA_VERSION, **asdict(self)}
        for c, dc in zip(self.checks, d["checks"]):
            dc["verdict"], dc["bitwise"] = c.verdict, c.bitwise
            bad = [
                k
                for k, v in dc.items()
                if isinstance(v, float) and not math.isfinite(v)
            ]
            dc.update({k: None for k in bad}, nonfinite=bool(bad))
        return d


def _inv_line(r: dict) -> str:
    return f"{r['count']} x {r['class']} [{r['kind']}]"
