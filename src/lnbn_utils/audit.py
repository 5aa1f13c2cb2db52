"""Audit a model for batch coupling, causal leaks, padding dependence, train/eval gaps.

    import lnbn_utils as lu
    report = lu.audit(model, tokens)  # the module is callable: lu.audit.audit
    print(report.table())

or from a shell (``--help`` lists every option)::

    python -m lnbn_utils.audit hf:GPT2Config --config '{"n_layer": 2, "n_embd": 64}'
    python -m lnbn_utils.audit mypkg.models:make_model --require batch:eval

Every verdict comes from perturbation tests on the example batch you give:

* **batch** (cross-example dependence): replace every other example of the batch and
  measure how much one example's output moves (relative change, ``||dy|| / ||y||``).
* **causal** (causal leakage, causal models only): replace the inputs after a cut
  point ``t`` and measure how much the outputs before ``t`` move.
* **padding** (padding invariance under the model's own mask convention): add pads,
  change what the pads hold, or pad on the left, and measure how much the outputs at
  the real positions move.
* **train_eval**: the same batch in training and in inference mode.
* an **inventory** of the normalization layers, by type, and by behaviour for classes
  the auditor does not know.

Coupling is told apart from randomness: both forwards of a comparison run from the same
random state, so dropout draws the same masks (``uncontrolled`` reports the change
without that control). Float noise is measured, not assumed: the *floor* is the relative
rounding error of the model's forward on the example batch, measured against a float64
copy of the model on the same batch (dropout off). It never changes the batch, so it
cannot absorb coupling (an earlier floor, "move the example to another slot", did: a
model that mixes in the mirrored example with weight 1e-4 passed as float noise).

``transformers`` is optional (``pip install 'lnbn_utils[audit]'``); it is imported only
to build a model from a Hugging Face config name.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import math
import sys
import types
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
import torch.nn as nn

__all__ = [
    "audit",
    "AuditReport",
    "CheckResult",
    "PaddingSpec",
    "norm_inventory",
    "dropout_off",
    "load_model",
    "example_for",
    "main",
]

PROPERTIES = ("batch", "causal", "padding", "train_eval")
MODES = ("train", "eval")
PRIMARY_NAMES = ("input_ids", "pixel_values", "inputs_embeds", "idx", "src", "x")
TRANSFORMERS_HINT = (
    "this needs Hugging Face transformers: pip install 'lnbn_utils[audit]' "
    "(or pip install transformers==5.24.0)"
)
# Public classes only (PyTorch's private _BatchNorm / _InstanceNorm bases are not API).
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_BATCH_NORMS += (nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d)
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_INSTANCE_NORMS += (nn.LazyInstanceNorm1d, nn.LazyInstanceNorm2d, nn.LazyInstanceNorm3d)
KNOWN_NORMS: tuple[
    tuple[type | tuple[type, ...], str, str], ...
] = (  # (class or classes, name, what its statistics span)
    (nn.SyncBatchNorm, "SyncBatchNorm", "batch (all processes) in train mode"),
    (_BATCH_NORMS, "BatchNorm", "batch in train mode"),
    (nn.LayerNorm, "LayerNorm", "each example's own features"),
    (nn.GroupNorm, "GroupNorm", "each example's own channel groups"),
    (_INSTANCE_NORMS, "InstanceNorm", "each example and channel"),
    (nn.LocalResponseNorm, "LocalResponseNorm", "neighbouring channels"),
)
if hasattr(nn, "RMSNorm"):
    KNOWN_NORMS = KNOWN_NORMS + (
        (nn.RMSNorm, "RMSNorm", "each example's own features"),
    )


# -------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class PaddingSpec:
    """How the model is told where the padding is.

    Args:
        mask_arg: keyword argument that carries the mask (``attention_mask`` in
            Hugging Face, ``padding_mask`` in this book, ``src_key_padding_mask`` in
            ``nn.TransformerEncoderLayer``).
        pad_is: the mask value that marks a pad: ``0`` for Hugging Face (1 = attend),
            ``True`` for PyTorch's ``key_padding_mask`` convention (True = pad).
        pad_value: what the padded positions of the primary input hold (a token id,
            or a float for embedded inputs).
        sides: which padding sides to test; ``"left"`` is what batched generation uses.
        extra: optional ``f(pad_mask) -> dict`` of further keyword arguments built from
            the bool (B, T) pad mask (True = pad), e.g. position ids that skip the pads.
    """

    mask_arg: str = "attention_mask"
    pad_is: Any = 0
    pad_value: float = 0
    sides: tuple[str, ...] = ("right",)
    extra: Optional[Callable[[torch.Tensor], dict]] = None

    def __post_init__(self) -> None:
        bad = [s for s in self.sides if s not in ("right", "left")]
        if bad or not self.sides:
            raise ValueError(
                f"expected sides from ('right', 'left'), got {self.sides!r}"
            )

    def mask(self, pad: torch.Tensor, like: Optional[torch.Tensor]) -> torch.Tensor:
        """The model's mask for a bool (B, T) pad mask (dtype of ``like`` if given)."""
        if isinstance(self.pad_is, bool):
            m = pad if self.pad_is else ~pad
            return m if like is None else m.to(like.dtype)
        m = torch.where(pad, int(self.pad_is), 1 - int(self.pad_is))
        return m.to(torch.long if like is None else like.dtype)


@dataclass
class CheckResult:
    """One measured property in one mode.

    ``change`` is the relative change of the compared outputs (same random state);
    ``floor`` the measured float-noise floor; the property holds when
    ``change <= tol``.
    """

    property: str
    mode: str
    change: float
    floor: float
    tol: float
    holds: bool
    uncontrolled: Optional[float] = None
    note: str = ""

    @property
    def verdict(self) -> str:
        """A short word for the table.

        "float noise" only when the change is within 10x the measured floor; a change
        above that but under ``rtol`` is real but tolerated: "below rtol".
        """
        if not self.holds:
            return "FAILS"
        if self.change == 0:
            return "holds (exact 0)"
        return (
            "holds (float noise)"
            if self.change <= 10 * self.floor
            else ("holds (below rtol)")
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

    def failures(self, require: Sequence[str] = ()) -> list[CheckResult]:
        """Failures among ``require`` (``"prop"`` or ``"prop:mode"``; empty: all)."""
        if not require:
            return [c for c in self.checks if not c.holds]
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
                if c.property.startswith(prop) and mode in ("", c.mode)
            ]
            if not hits:
                have = sorted({f"{c.property}:{c.mode}" for c in self.checks})
                raise ValueError(
                    f"expected a measured property (one of {have}), got {req!r}"
                )
            out += [c for c in hits if not c.holds and c not in out]
        return out

    def table(self) -> str:
        """A plain-text table of the checks, then the norm inventory."""
        cols = f"{'property':<16}{'mode':<12}{'change':>11}{'floor':>11}"
        head = f"{cols}{'no RNG ctl':>12}  verdict"
        lines = [
            f"audit of {self.model}  (inputs {self.shape}, causal={self.causal})",
            head,
        ]
        lines.append("-" * len(head))
        for c in self.checks:
            unc = "" if c.uncontrolled is None else f"{c.uncontrolled:.3g}"
            lines.append(
                f"{c.property:<16}{c.mode:<12}{c.change:>11.3g}{c.floor:>11.3g}{unc:>12}"
                f"  {c.verdict}{'  ' + c.note if c.note else ''}"
            )
        lines.append(
            "norm layers: "
            + (", ".join(_inv_line(r) for r in self.inventory) or "none")
        )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """A JSON-ready dict (what ``--json`` prints); strict JSON: a non-finite
        number (a model that returned inf or nan) is written as a string."""
        d = asdict(self)
        for c, dc in zip(self.checks, d["checks"]):
            dc["verdict"] = c.verdict
            for k, v in dc.items():
                if isinstance(v, float) and not math.isfinite(v):
                    dc[k] = str(v)
        return d


def _inv_line(r: dict) -> str:
    return f"{r['count']} x {r['class']} [{r['kind']}]"


# ------------------------------------------------------------------------------ inputs


class _Inputs:
    """Positional and keyword inputs; dim 0 of the *primary* tensor is the batch."""

    def __init__(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], primary: Any
    ) -> None:
        self.args, self.kwargs, self.primary = list(args), dict(kwargs), primary

    @classmethod
    def wrap(cls, example: Any, primary: Optional[str]) -> "_Inputs":
        if isinstance(example, torch.Tensor):
            return cls([example], {}, 0)
        if isinstance(example, (tuple, list)) and example:
            return cls(example, {}, 0 if primary is None else int(primary))
        if isinstance(example, Mapping) and example:
            key = primary or next(
                (k for k in PRIMARY_NAMES if k in example), next(iter(example))
            )
            if key not in example:
                raise ValueError(
                    f"expected primary input {key!r} among {list(example)}, got none"
                )
            return cls([], example, key)
        raise TypeError(
            "expected example_inputs to be a tensor, a non-empty tuple of positional "
            "inputs or a non-empty dict of keyword inputs, "
            f"got {type(example).__name__}"
        )

    def get(self) -> torch.Tensor:
        return (
            self.args[self.primary]
            if isinstance(self.primary, int)
            else self.kwargs[self.primary]
        )

    def replace(self, x: torch.Tensor, **kw: Any) -> "_Inputs":
        new = _Inputs(self.args, {**self.kwargs, **kw}, self.primary)
        if isinstance(self.primary, int):
            new.args[self.primary] = x
        else:
            new.kwargs[self.primary] = x
        return new

    def map_batch(
        self, fn: Callable[[torch.Tensor], torch.Tensor], B: int
    ) -> "_Inputs":
        """Apply ``fn`` to every tensor whose dim 0 is the batch (e.g. a reorder)."""
        f = lambda v: (
            fn(v) if isinstance(v, torch.Tensor) and v.dim() and len(v) == B else v
        )  # noqa: E731
        return _Inputs(
            [f(a) for a in self.args],
            {k: f(v) for k, v in self.kwargs.items()},
            self.primary,
        )


def _output(out: Any, B: Optional[int] = None) -> torch.Tensor:
    """The tensor to compare: ``logits``, ``last_hidden_state``, else the first tensor
    whose dim 0 is the batch ``B`` (a scalar loss returned first is skipped)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        for key in ("logits", "last_hidden_state"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key]
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        tensors = [v for v in out if isinstance(v, torch.Tensor)]
        batched = [v for v in tensors if v.dim() and (B is None or len(v) == B)]
        if batched or tensors:
            return (batched or tensors)[0]
    raise TypeError(
        "expected the model to return a tensor, a tuple or a dict of tensors, "
        f"got {type(out).__name__}"
    )


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (0 when both are 0)."""
    a, b = a.detach().double(), b.detach().double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("inf")
    den = float(b.norm())
    num = float((a - b).norm())
    return num / den if den > 0 else num


def _perturbed(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Fresh values like ``x``: ids from those present, floats ~ N(mean, std)."""
    if x.dtype == torch.bool:
        raise TypeError(
            "expected the primary input to be ids or floats, got a bool tensor"
        )
    if not x.is_floating_point():
        vocab = x.unique()
        if len(vocab) < 2:
            raise ValueError(
                "expected at least 2 distinct ids in the example batch, "
                f"got {vocab.tolist()}"
            )
        return vocab[torch.randint(len(vocab), x.shape, generator=g)].to(x.device)
    std = float(x.std()) if x.numel() > 1 and float(x.std()) > 0 else 1.0
    return (
        torch.randn(x.shape, generator=g, dtype=x.dtype) * std + float(x.mean())
    ).to(x.device)


# ------------------------------------------------------------------------- model state


@contextlib.contextmanager
def _preserved(model: nn.Module) -> Iterator[None]:
    """Restore buffers (running statistics) and train/eval flags on exit."""
    bufs = {k: v.detach().clone() for k, v in model.named_buffers()}
    flags = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(bufs[k])
        for m, t in flags.items():
            m.training = t


@contextlib.contextmanager
def dropout_off(model: nn.Module) -> Iterator[None]:
    """Set every dropout probability to 0 (also ``nn.MultiheadAttention.dropout``)."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            saved.append((m, "p", m.p))
            m.p = 0.0
        elif isinstance(m, nn.MultiheadAttention):
            saved.append((m, "dropout", m.dropout))
            m.dropout = 0.0
    try:
        yield
    finally:
        for m, name, v in saved:
            setattr(m, name, v)


class _Runner:
    """Calls the model under a fixed random state; counts forwards for the progress."""

    def __init__(
        self, model: nn.Module, seed: int, progress: "_Progress", B: int
    ) -> None:
        self.model, self.seed, self.progress, self.B = model, seed, progress, B

    def __call__(
        self, inp: _Inputs, rng: int = 0, model: Optional[nn.Module] = None
    ) -> torch.Tensor:
        model = self.model if model is None else model
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(self.seed + 7919 * rng)
            try:
                out = _output(model(*inp.args, **inp.kwargs), self.B)
            except (TypeError, ValueError, RuntimeError, IndexError) as e:
                raise ValueError(
                    f"expected the model to accept the audit's inputs "
                    f"({_describe(inp)}), but it raised {type(e).__name__}: {e}"
                ) from e
        self.progress.step()
        return out


def _describe(inp: _Inputs) -> str:
    def d(v: Any) -> str:
        return (
            f"{tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
            if isinstance(v, torch.Tensor)
            else type(v).__name__
        )

    parts = [d(a) for a in inp.args] + [f"{k}={d(v)}" for k, v in inp.kwargs.items()]
    return ", ".join(parts)


class _Progress:
    """A one-line progress bar on stderr (no dependency)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.n, self.enabled, self.label = total, 0, enabled, ""

    def step(self) -> None:
        self.n += 1
        if self.enabled:
            done = int(30 * self.n / max(self.total, 1))
            bar = "#" * done + "." * (30 - done)
            sys.stderr.write(f"\raudit [{bar}] {self.n}/{self.total} {self.label:<16}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


# --------------------------------------------------------------------------- inventory


def norm_inventory(model: nn.Module, probe: bool = True) -> list[dict]:
    """Count the normalization layers in ``model``, by class.

    Known classes (BatchNorm, SyncBatchNorm, LayerNorm, RMSNorm, GroupNorm,
    InstanceNorm and their subclasses) are named by type. A class the auditor does not
    know is listed when its name contains "norm" or it keeps a ``running_mean`` buffer,
    and, if ``probe``, classified by behaviour on a random (4, 8, C) input in train
    mode: "batch statistics" if one example's output moves when the others change,
    "per-example" if not.

    Returns:
        A list of dicts with ``class``, ``kind``, ``count`` and ``spans`` (or
        ``probe`` for classes classified by behaviour).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    rows: dict[str, dict] = {}
    for m in model.modules():
        cls = type(m).__name__
        known = next(((n, s) for c, n, s in KNOWN_NORMS if isinstance(m, c)), None)
        if known:
            from_torch = type(m).__module__.startswith("torch.nn")
            kind = known[0] if from_torch else f"{known[0]} subclass"
            row = rows.setdefault(
                cls, {"class": cls, "kind": kind, "count": 0, "spans": known[1]}
            )
        elif "norm" in cls.lower() or any(
            n == "running_mean" for n, _ in m.named_buffers(recurse=False)
        ):
            if any(
                isinstance(c, tuple(k for k, _, _ in KNOWN_NORMS)) for c in m.modules()
            ):
                continue  # a wrapper around a known norm: the norm itself is listed
            if cls not in rows:
                kind = _probe_norm(m) if probe else "unknown (not probed)"
                rows[cls] = {
                    "class": cls,
                    "kind": kind,
                    "count": 0,
                    "spans": "by behaviour",
                }
            row = rows[cls]
        else:
            continue
        row["count"] += 1
    return list(rows.values())


def _probe_norm(m: nn.Module) -> str:
    """Classify an unknown norm layer by feeding it (4, 8, C) inputs in train mode."""
    C = next(
        (int(p.shape[0]) for p in m.parameters(recurse=False) if p.dim() == 1), None
    )
    C = (
        C
        or getattr(m, "num_features", None)
        or getattr(m, "normalized_shape", (None,))[0]
    )
    if not C:
        return "unknown (no feature size)"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, int(C), generator=g)
    y = x.clone()
    y[1:] = torch.randn(3, 8, int(C), generator=g) * 3 + 1
    with _preserved(m), torch.no_grad():
        m.train()
        try:
            change = _rel(m(y)[0], m(x)[0])
        except Exception:  # noqa: BLE001 - any failure means "could not probe"
            return "unknown (probe failed)"
    return "batch statistics (probed)" if change > 1e-5 else "per-example (probed)"


# ------------------------------------------------------------------------------ checks


def _is_causal(model: nn.Module) -> bool:
    """Whether the model says it is causal (attribute, config, class, attention)."""
    for obj in (model, getattr(model, "config", None), getattr(model, "cfg", None)):
        for attr in ("is_causal", "causal", "is_decoder"):
            if isinstance(getattr(obj, attr, None), bool) and getattr(obj, attr):
                return True
    if type(model).__name__.endswith(("ForCausalLM", "LMHeadModel")):
        return True
    # transformers marks each attention layer: GPT2Attention.is_causal is True
    return any(getattr(m, "is_causal", None) is True for m in model.modules())


FLOOR_CAP = 1e-3  # a float32 "floor" above this is not rounding (scaled by the eps)
RTOL32 = 1e-5  # default rtol for float32 outputs, scaled by the eps for other dtypes
EPS32 = torch.finfo(torch.float32).eps


def _eps_ratio(dtype: torch.dtype) -> float:
    """The output dtype's machine epsilon over float32's (1 for non-float outputs)."""
    return torch.finfo(dtype).eps / EPS32 if dtype.is_floating_point else 1.0


def _judge(
    prop: str,
    mode: str,
    change: float,
    floor: float,
    rtol: float,
    cap: float,
    note: str = "",
    **kw: Any,
) -> CheckResult:
    tol = max(rtol, 10 * floor)
    holds = change <= tol and floor <= cap
    if floor > cap:
        note = "; ".join(filter(None, [note, "floor above its cap: not rounding"]))
    return CheckResult(prop, mode, change, floor, tol, holds, note=note, **kw)


def _check_batch(
    run: _Runner, inp: _Inputs, B: int, trials: int, g: torch.Generator
) -> tuple[float, float]:
    """(max change, max change without RNG control) of one example's output.

    The examples watched are taken from both ends of the batch (0, B-1, 1, ...), so
    two trials already see a coupling that reaches only the last example (a cumulative
    sum over the batch) or only the first.
    """
    base = run(inp)
    changes, unctl = [], []
    ends = [j for k in range((B + 1) // 2) for j in dict.fromkeys((k, B - 1 - k))]
    for t in range(trials):
        i = ends[t % B]  # 0, B-1, 1, B-2, ...: both ends of the batch come first
        x = inp.get()
        others = torch.arange(B, device=x.device) != i
        y = x.clone()
        y[others] = _perturbed(x[others], g)
        out = run(inp.replace(y))
        changes.append(_rel(out[i], base[i]))
        unctl.append(_rel(run(inp.replace(y), rng=t + 1)[i], base[i]))
    return max(changes), max(unctl)


def _cast(inp: _Inputs, dtype: torch.dtype) -> _Inputs:
    """The inputs with every floating-point tensor cast to ``dtype``."""
    f = lambda v: (  # noqa: E731
        v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
    )
    return _Inputs(
        [f(a) for a in inp.args], {k: f(v) for k, v in inp.kwargs.items()}, inp.primary
    )


def _float_floor(run: _Runner, inp: _Inputs) -> tuple[float, torch.dtype, str]:
    """(floor, output dtype, note): the forward's relative rounding error.

    The floor is ``||y - y_ref|| / ||y_ref||`` on the example batch, where ``y_ref``
    comes from a float64 copy of the model (for a float64 model: a float32 copy's
    error scaled by the ratio of the two machine epsilons). Dropout is off. The batch
    is never changed, so no coupling can enter the floor. A model that is random in
    this mode beyond dropout (two forwards from different random states differ) gets
    no floor (0) and a note; a model that cannot run in the other dtype falls back to
    the change of example 0 when the batch is rolled (which an order-dependent
    model's coupling can inflate: the note says so).
    """
    with dropout_off(run.model):
        out = run(inp)
        dt = out.dtype
        if not dt.is_floating_point:
            return 0.0, dt, "non-float output: floor not measured"
        if not torch.isfinite(out).all():
            return 0.0, dt, "non-finite outputs (inf or nan)"
        if _rel(run(inp, rng=1), out) > 0:
            return 0.0, dt, "random beyond dropout: floor not measured"
        ref_dt = torch.float32 if dt == torch.float64 else torch.float64
        try:
            ref_model = copy.deepcopy(run.model).to(ref_dt)
            ref = run(_cast(inp, ref_dt), model=ref_model)
        except Exception:  # noqa: BLE001 - any failure: fall back to a batch roll
            B = run.B
            roll = torch.roll(torch.arange(B), 1)  # example 0 moves to slot 1
            rolled = run(inp.map_batch(lambda v: v[roll], B))
            return _rel(rolled[1], out[0]), dt, "floor from a batch roll"
    if dt == torch.float64:
        return _rel(ref, out) * _eps_ratio(dt), dt, ""
    return _rel(out, ref), dt, ""


MAX_CUTS = 64  # causal check: every cut point up to this many, else an even spread


def _cuts(T: int) -> list[int]:
    """Cut points for the causal check: every t in 1..T-1 (at most ``MAX_CUTS``)."""
    if T - 1 <= MAX_CUTS:
        return list(range(1, T))
    return sorted({int(round(v)) for v in torch.linspace(1, T - 1, MAX_CUTS).tolist()})


def _check_causal(run: _Runner, inp: _Inputs, g: torch.Generator) -> float:
    """Max relative change of outputs before a cut when the inputs after it change.

    Every cut point is tried (up to ``MAX_CUTS``): a leak from position j to i < j
    shows only at cuts in (i, j], so random cuts would miss a leak between neighbours.
    """
    x = inp.get()
    T = x.shape[1]
    if T < 2:
        raise ValueError(
            f"expected at least 2 positions for the causal check, got T={T}"
        )
    base = run(inp)
    if base.dim() < 2 or base.shape[1] != T:
        raise ValueError(
            f"expected per-position outputs (B, T={T}, ...) for the causal check, "
            f"got {tuple(base.shape)}"
        )
    changes = []
    for cut in _cuts(T):
        y = x.clone()
        y[:, cut:] = _perturbed(x[:, cut:], g)
        changes.append(_rel(run(inp.replace(y))[:, :cut], base[:, :cut]))
    return max(changes)


def _pad(
    inp: _Inputs, spec: PaddingSpec, k: int, side: str
) -> tuple[_Inputs, torch.Tensor, torch.Tensor]:
    """Pad each (B, T, ...) input by ``k`` on ``side``.

    Returns the padded inputs, the bool (B, T + k) pad mask (the example's own pads
    included) and the index of the original T positions in the padded sequence.
    """
    x = inp.get()
    B, T = x.shape[:2]

    def cat(a: torch.Tensor, fill: float) -> torch.Tensor:
        b = torch.full((B, k, *a.shape[2:]), fill, dtype=a.dtype, device=a.device)
        return torch.cat([a, b] if side == "right" else [b, a], dim=1)

    kw = {}
    for name, v in inp.kwargs.items():  # other per-token inputs (e.g. token types)
        per_token = isinstance(v, torch.Tensor) and v.dim() >= 2
        if name != spec.mask_arg and per_token and v.shape[:2] == (B, T):
            kw[name] = cat(v, 0)
    pad = cat(_base_pad(inp, spec), True)
    kw[spec.mask_arg] = spec.mask(pad, inp.kwargs.get(spec.mask_arg))
    if spec.extra is not None:
        kw.update(spec.extra(pad))
    orig = torch.arange(T) + (0 if side == "right" else k)
    return inp.replace(cat(x, spec.pad_value), **kw), pad, orig


def _base_pad(inp: _Inputs, spec: PaddingSpec) -> torch.Tensor:
    """The example's own pads, bool (B, T), from its mask (none if it has no mask)."""
    x, m = inp.get(), inp.kwargs.get(spec.mask_arg)
    if m is None:
        return torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
    if tuple(m.shape) != tuple(x.shape[:2]):
        raise ValueError(
            f"expected {spec.mask_arg} of shape {tuple(x.shape[:2])}, "
            f"got {tuple(m.shape)}"
        )
    return (
        m.bool()
        if spec.pad_is is True
        else (~m.bool() if spec.pad_is is False else m == int(spec.pad_is))
    )


def _check_padding(
    run: _Runner, inp: _Inputs, spec: PaddingSpec, k: int, g: torch.Generator
) -> dict[str, float]:
    """Relative change at the real positions: more pads, other pad values, left pads.

    The reference is the example batch with its own mask (all real if it has none);
    the example's own pads are excluded from the comparison.
    """
    x = inp.get()
    B, T = x.shape[:2]
    base_pad = _base_pad(inp, spec)
    ref_kw = {spec.mask_arg: spec.mask(base_pad, inp.kwargs.get(spec.mask_arg))}
    if spec.extra is not None:
        ref_kw.update(spec.extra(base_pad))
    base = run(inp.replace(x, **ref_kw))
    per_token = base.dim() >= 2 and base.shape[1] == T
    real = ~base_pad  # (B, T)

    def at_real(out: torch.Tensor, orig: torch.Tensor) -> torch.Tensor:
        return out[:, orig][real] if per_token else out

    res = {}
    for side in spec.sides:
        padded, _, orig = _pad(inp, spec, k, side)
        name = "padding:length" if side == "right" else "padding:left"
        res[name] = _rel(at_real(run(padded), orig), at_real(base, torch.arange(T)))
    padded, pad, orig = _pad(inp, spec, k, spec.sides[0])
    y = padded.get()
    other = padded.replace(torch.where(_expand(pad, y), _perturbed(y, g), y))
    ref = at_real(run(padded), orig)
    res["padding:values"] = _rel(at_real(run(other), orig), ref)
    return res


def _expand(pad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (B, T) mask broadcast to the shape of a (B, T, ...) tensor."""
    return pad.view(*pad.shape, *([1] * (like.dim() - 2))).expand_as(like)


# ------------------------------------------------------------------------------- audit


def audit(
    model: nn.Module,
    example_inputs: Any,
    *,
    properties: Optional[Sequence[str]] = None,
    modes: Sequence[str] = MODES,
    causal: Optional[bool] = None,
    padding: Optional[PaddingSpec] = None,
    pad_length: Optional[int] = None,
    primary: Optional[str] = None,
    trials: int = 3,
    rtol: Optional[float] = None,
    seed: int = 0,
    progress: bool = False,
    name: Optional[str] = None,
) -> AuditReport:
    """Measure batch coupling, causal leakage, padding invariance and train/eval gap.

    Args:
        model: the module to audit; its parameters are not changed and its buffers
            (running statistics) are restored afterwards. The float floor runs a
            float64 copy of it (a float32 copy for a float64 model): plan for the
            extra memory.
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword
            inputs. Dim 0 of the *primary* input is the batch (B >= 2); for the causal
            and padding checks, dim 1 is the sequence. Use real-looking data: ids are
            resampled from the ids present, floats from N(mean, std) of the input.
        properties: any of "batch", "causal", "padding", "train_eval"; default: every
            one that applies ("causal" if the model is causal, "padding" if
            ``padding`` is given). Asking for one that does not apply is an error.
        modes: "train" and/or "eval".
        causal: whether the model is causal; None: from the model (``is_causal``,
            ``config.is_decoder``, ``cfg.causal``, a ``...ForCausalLM`` class).
        padding: the model's mask convention (see ``PaddingSpec``).
        pad_length: pads added in the padding checks (default T // 2, at least 1).
        primary: positional index or keyword of the primary input (default: the first
            of input_ids, pixel_values, inputs_embeds, idx, src, x, else the first).
        trials: partner perturbations for the batch check; the report keeps the
            largest change. The causal check tries every cut point (up to 64).
        rtol: relative change below which a property holds (raised to 10x the measured
            float floor when that floor is larger). Default: 1e-5 for float32 outputs,
            scaled by the machine epsilon for other dtypes (about 2e-14 for float64),
            so a coupling far above float64 rounding is not tolerated as "noise".
        seed: seeds the perturbations and the random state shared by the forwards.
        progress: draw a progress bar on stderr.
        name: the model's name in the report.

    Returns:
        An ``AuditReport``; ``report.table()`` prints it, ``report.failures()`` lists
        what failed.

    Example:
        >>> import torch, lnbn_utils as lu
        >>> model = lu.TinyTransformer(lu.TransformerConfig(norm="batch"))
        >>> report = lu.audit(model, torch.randint(0, 64, (4, 16)))
        >>> report.get("batch", "train").holds, report.get("batch", "eval").holds
        (False, True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"expected model to be a torch.nn.Module, got {type(model).__name__}"
        )
    inp = _Inputs.wrap(example_inputs, primary)
    x = inp.get()
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise TypeError(
            "expected the primary input to be a tensor with a batch dim, "
            f"got {_describe(inp)}"
        )
    B = x.shape[0]
    if B < 2:
        raise ValueError(
            "expected a batch of at least 2 examples (dim 0), "
            f"got shape {tuple(x.shape)}"
        )
    bad = [m for m in modes if m not in MODES] or ([] if modes else ["(none)"])
    if bad:
        raise ValueError(f"expected modes from {MODES}, got {list(modes)}")
    if trials < 1:
        raise ValueError(f"expected trials >= 1, got {trials}")
    is_causal = _is_causal(model) if causal is None else bool(causal)
    props = _resolve_properties(properties, is_causal, padding, x)
    if "padding" in props:
        _base_pad(inp, padding)  # a mask of the wrong shape: a clear error up front
    n = _count_forwards(props, modes, trials, padding, x)
    bar = _Progress(n, progress)
    run = _Runner(model, seed, bar, B)
    g = torch.Generator().manual_seed(seed)
    k = pad_length or max(1, x.shape[1] // 2 if x.dim() >= 2 else 1)
    checks: list[CheckResult] = []
    used_rtol: dict[str, Any] = {}
    with _preserved(model):
        for mode in modes:
            model.train(mode == "train")
            checks += _audit_mode(
                run, inp, mode, props, trials, g, padding, k, rtol, bar, used_rtol
            )
        if "train_eval" in props:
            bar.label = "train_eval"
            checks.append(_train_eval(run, inp, model, rtol, used_rtol))
    bar.close()
    inventory = norm_inventory(model)
    settings = {
        "trials": trials,
        "rtol": rtol if rtol is not None else used_rtol.get("rtol", RTOL32),
        "seed": seed,
        "pad_length": k,
        "modes": list(modes),
    }
    shape = _describe(inp)
    return AuditReport(
        name or type(model).__name__, checks, inventory, shape, is_causal, settings
    )


def _resolve_properties(
    props: Optional[Sequence[str]],
    causal: bool,
    padding: Optional[PaddingSpec],
    x: torch.Tensor,
) -> list[str]:
    if props is None:
        props = (
            ["batch"]
            + (["causal"] if causal else [])
            + (["padding"] if padding else [])
            + ["train_eval"]
        )
    props = list(props)
    bad = [p for p in props if p not in PROPERTIES]
    if bad:
        raise ValueError(f"expected properties from {PROPERTIES}, got {bad}")
    if "causal" in props and not causal:
        raise ValueError(
            "causal leakage applies only to causal models; this one does not say it is "
            "causal (pass causal=True, or --causal, if it is)"
        )
    if "padding" in props and padding is None:
        raise ValueError(
            "the padding check needs the model's mask convention: "
            "pass padding=PaddingSpec(...)"
        )
    if ("causal" in props or "padding" in props) and x.dim() < 2:
        raise ValueError(
            "expected a (B, T, ...) primary input for causal/padding checks, "
            f"got {tuple(x.shape)}"
        )
    return props


def _count_forwards(
    props: Sequence[str],
    modes: Sequence[str],
    trials: int,
    padding: Optional[PaddingSpec],
    x: torch.Tensor,
) -> int:
    per_mode = 3 + ("batch" in props) * (1 + 2 * trials)  # 3: the float floor
    if "causal" in props:
        per_mode += 1 + len(_cuts(x.shape[1]))
    per_mode += ("padding" in props) * (3 + len(padding.sides) if padding else 0)
    return per_mode * len(modes) + ("train_eval" in props) * 3


def _audit_mode(
    run: _Runner,
    inp: _Inputs,
    mode: str,
    props: Sequence[str],
    trials: int,
    g: torch.Generator,
    padding: Optional[PaddingSpec],
    k: int,
    rtol: Optional[float],
    bar: _Progress,
    used: Optional[dict] = None,
) -> list[CheckResult]:
    """The batch, causal and padding checks in the model's current mode."""
    out = []
    B = inp.get().shape[0]
    bar.label = f"floor/{mode}"
    floor, dt, fnote = _float_floor(run, inp)
    ratio = _eps_ratio(dt)
    tol = RTOL32 * ratio if rtol is None else rtol
    cap = FLOOR_CAP * ratio
    if used is not None:
        used["rtol"] = tol
        used[f"floor/{mode}"] = (floor, fnote)
    if "batch" in props:
        bar.label = f"batch/{mode}"
        change, unctl = _check_batch(run, inp, B, trials, g)
        out.append(
            _judge(
                "batch",
                mode,
                change,
                floor,
                tol,
                cap,
                note=fnote,
                uncontrolled=unctl if mode == "train" else None,
            )
        )
    if "causal" in props:
        bar.label = f"causal/{mode}"
        change = _check_causal(run, inp, g)
        out.append(_judge("causal", mode, change, floor, tol, cap, note=fnote))
    if "padding" in props:
        bar.label = f"padding/{mode}"
        ctx = dropout_off(run.model) if mode == "train" else contextlib.nullcontext()
        # pad length changes shapes, so equal seeds would not give equal dropout masks
        with ctx:
            res = _check_padding(run, inp, padding, k, g)
        note = "; ".join(
            filter(None, ["dropout off" if mode == "train" else "", fnote])
        )
        out += [_judge(p, mode, v, floor, tol, cap, note=note) for p, v in res.items()]
    return out


def _train_eval(
    run: _Runner,
    inp: _Inputs,
    model: nn.Module,
    rtol: Optional[float],
    floors: Optional[dict] = None,
) -> CheckResult:
    """Train-mode output (dropout off) vs eval-mode output on the same batch.

    The floor is the larger of the two modes' floors (reused from the mode checks,
    measured here if a mode was not audited).
    """
    floors = {} if floors is None else floors
    found = []
    for mode in MODES:
        model.train(mode == "train")
        found.append(floors.get(f"floor/{mode}") or _float_floor(run, inp)[::2])
    floor = max(f for f, _ in found)
    fnote = "; ".join(dict.fromkeys(n for _, n in found if n))
    model.eval()
    ev = run(inp)
    ratio = _eps_ratio(ev.dtype)
    tol = RTOL32 * ratio if rtol is None else rtol
    model.train()
    raw = _rel(run(inp), ev)
    with dropout_off(model):
        change = _rel(run(inp), ev)
    note = "; ".join(filter(None, ["dropout off", fnote]))
    return _judge(
        "train_eval",
        "train->eval",
        change,
        floor,
        tol,
        FLOOR_CAP * ratio,
        note=note,
        uncontrolled=raw,
    )


# ----------------------------------------------------------------------------- loading


def load_model(
    spec: str, config: Optional[dict] = None, model_class: Optional[str] = None
) -> tuple[nn.Module, Any]:
    """A model (and example inputs, if the factory gives them) from a string.

    ``"pkg.module:factory"`` calls ``factory(**config)``, which returns a model or a
    ``(model, example_inputs)`` pair. ``"hf:GPT2Config"`` (or any name ending in
    ``Config``) builds that Hugging Face config with ``config`` overrides and a model
    with random weights (``model_class``, default ``AutoModel``); nothing is downloaded.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"expected 'module:factory' or 'hf:SomeConfig', got {spec!r}")
    if spec.startswith("hf:") or (":" not in spec and spec.endswith("Config")):
        return _load_hf(spec.removeprefix("hf:"), config or {}, model_class), None
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"expected 'module:factory' or 'hf:SomeConfig', got {spec!r}")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(
            f"could not import module {mod_name!r} from {spec!r}: {e}"
        ) from e
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(
                f"module {mod_name!r} has no attribute {attr!r} (from {spec!r})"
            )
        obj = getattr(obj, part)
    made = (
        obj(**(config or {}))
        if callable(obj) and not isinstance(obj, nn.Module)
        else obj
    )
    model, example = (
        made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    )
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"expected {spec!r} to give an nn.Module, got {type(model).__name__}"
        )
    return model, example


def _load_hf(name: str, overrides: dict, model_class: Optional[str]) -> nn.Module:
    try:
        import transformers
    except ImportError as e:
        raise ImportError(f"{name}: {TRANSFORMERS_HINT}") from e
    cfg_cls = getattr(transformers, name, None)
    if cfg_cls is None or not name.endswith("Config"):
        raise ValueError(
            "expected a transformers config class name such as 'GPT2Config', "
            f"got {name!r}"
        )
    cfg = cfg_cls(**overrides)
    cls = getattr(transformers, model_class or "AutoModel", None)
    if cls is None:
        raise ValueError(f"expected a transformers model class, got {model_class!r}")
    return cls.from_config(cfg) if hasattr(cls, "from_config") else cls(cfg)


def example_for(
    model: nn.Module, batch: int = 4, length: int = 16, seed: int = 0
) -> dict:
    """Random inputs for a model built from a Hugging Face config (ids or pixels)."""
    cfg = getattr(model, "config", None)
    g = torch.Generator().manual_seed(seed)
    if cfg is not None and getattr(cfg, "image_size", None):
        size = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
        return {
            "pixel_values": torch.randn(
                batch, getattr(cfg, "num_channels", 3), size, size, generator=g
            )
        }
    if cfg is not None and getattr(cfg, "vocab_size", None):
        return {
            "input_ids": torch.randint(1, cfg.vocab_size, (batch, length), generator=g)
        }
    raise ValueError(
        f"cannot guess inputs for {type(model).__name__}: use --inputs, or a factory "
        "that "
        "returns (model, example_inputs)"
    )


def _parse_inputs(text: str, seed: int) -> Any:
    """``ids:B,T[:V]``, ``float:B,T,C`` or ``image:B,C,H,W`` -> a random tensor."""
    kind, _, rest = text.partition(":")
    dims, _, vocab = rest.partition(":")
    try:
        shape = tuple(int(d) for d in dims.split(","))
        vocab_n = int(vocab) if vocab else 64
    except ValueError:
        raise ValueError(
            f"expected e.g. ids:4,16:64 or float:4,16,32, got {text!r}"
        ) from None
    g = torch.Generator().manual_seed(seed)
    if kind == "ids":
        return torch.randint(1, vocab_n, shape, generator=g)
    if kind in ("float", "image"):
        return torch.randn(shape, generator=g)
    raise ValueError(f"expected input kind ids, float or image, got {kind!r}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lnbn_utils.audit",
        description=(
            "Audit a model for batch coupling, causal leakage, padding invariance and "
            "train/eval discrepancy, in train and eval mode, and list its norm layers. "
            "Exit status: 0 if every required property holds, 1 if one fails, "
            "2 on bad usage or when the model cannot be built or run."
        ),
        epilog=(
            "examples:\n"
            "  python -m lnbn_utils.audit hf:GPT2Config "
            '--config \'{"n_layer": 2, "n_embd": 64}\' '
            "--model-class GPT2LMHeadModel --mask-arg attention_mask\n"
            "  python -m lnbn_utils.audit mypkg.models:make --inputs ids:8,32:100 "
            "--require batch:eval"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        help="'pkg.module:factory' (returns a model or (model, example_inputs)) "
        "or 'hf:SomeConfig' (a transformers config, random weights, no download)",
    )
    p.add_argument(
        "--config",
        default="{}",
        help="JSON dict: keyword arguments for the factory or the config",
    )
    p.add_argument(
        "--model-class",
        default=None,
        help="transformers model class for hf: (default AutoModel)",
    )
    p.add_argument(
        "--inputs",
        default=None,
        help="random example inputs: ids:B,T[:VOCAB], float:B,T,C or "
        "image:B,C,H,W (default: from the factory, or guessed from the hf config)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=4,
        help="batch size of guessed hf inputs (default 4)",
    )
    p.add_argument(
        "--length",
        type=int,
        default=16,
        help="sequence length of guessed hf inputs (default 16)",
    )
    p.add_argument(
        "--properties",
        default=None,
        help="comma list from batch,causal,padding,train_eval "
        "(default: all that apply)",
    )
    p.add_argument(
        "--modes",
        default="train,eval",
        help="comma list from train,eval (default both)",
    )
    causal = p.add_mutually_exclusive_group()
    causal.add_argument(
        "--causal",
        dest="causal",
        action="store_true",
        default=None,
        help="treat the model as causal (default: detect)",
    )
    causal.add_argument(
        "--not-causal",
        dest="causal",
        action="store_false",
        help="treat it as not causal",
    )
    p.add_argument(
        "--mask-arg",
        default=None,
        help="keyword that takes the padding mask; enables the "
        "padding check (attention_mask, padding_mask, src_key_padding_mask, ...)",
    )
    p.add_argument(
        "--pad-is",
        default="0",
        help="mask value marking a pad: 0 (Hugging Face, default), "
        "1, true (PyTorch key_padding_mask) or false",
    )
    p.add_argument(
        "--pad-value",
        type=float,
        default=0,
        help="value of padded input positions (default 0)",
    )
    p.add_argument(
        "--pad-sides",
        default="right",
        help="comma list from right,left (default right)",
    )
    p.add_argument(
        "--pad-length", type=int, default=None, help="pads added (default T // 2)"
    )
    p.add_argument(
        "--trials",
        type=int,
        default=3,
        help="partner perturbations for the batch check (default 3; the causal "
        "check tries every cut point, up to 64)",
    )
    p.add_argument(
        "--rtol",
        type=float,
        default=None,
        help="relative change under which a property holds (default 1e-5 for "
        "float32 outputs, scaled by the dtype's epsilon otherwise; raised to 10x "
        "the measured float floor)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for inputs, perturbations and dropout (default 0)",
    )
    p.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="PROP[:MODE]",
        help="exit 1 if this property fails, e.g. batch:eval, padding, causal:train "
        "(repeatable; default: nothing required, exit 0)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON instead of a table",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr (auto: when stderr is a terminal)",
    )
    return p


def _pad_is(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("0", "1"):
        return int(low)
    raise ValueError(f"expected --pad-is 0, 1, true or false, got {text!r}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (see ``--help``)."""
    p = _parser()
    a = p.parse_args(argv)
    try:
        config = json.loads(a.config)
        if not isinstance(config, dict):
            raise ValueError(f"expected --config to be a JSON object, got {a.config!r}")
        model, example = load_model(a.model, config, a.model_class)
        if a.inputs:
            example = _parse_inputs(a.inputs, a.seed)
        elif example is None:
            example = example_for(model, a.batch, a.length, a.seed)
        padding = None
        if a.mask_arg:
            padding = PaddingSpec(
                a.mask_arg,
                _pad_is(a.pad_is),
                a.pad_value,
                tuple(a.pad_sides.split(",")),
            )
        props = a.properties.split(",") if a.properties else None
        progress = {"always": True, "never": False}.get(a.progress, sys.stderr.isatty())
        report = audit(
            model,
            example,
            properties=props,
            modes=tuple(a.modes.split(",")),
            causal=a.causal,
            padding=padding,
            pad_length=a.pad_length,
            trials=a.trials,
            rtol=a.rtol,
            seed=a.seed,
            progress=progress,
            name=a.model,
        )
        failed = report.failures(a.require) if a.require else []
    except (ValueError, TypeError, ImportError, json.JSONDecodeError) as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    except Exception as e:  # noqa: BLE001 - a crash must not read as "a check failed"
        p.exit(2, f"{p.prog}: error: {type(e).__name__}: {e}\n")
    print(json.dumps(report.to_dict(), indent=1) if a.json else report.table())
    if failed:
        names = ", ".join(f"{c.property}:{c.mode}" for c in failed)
        print(f"FAILED required properties: {names}", file=sys.stderr)
        return 1
    return 0


class _CallableModule(types.ModuleType):
    """Lets ``lu.audit(model, x)`` call ``audit``; ``lu.audit`` stays this module."""

    def __call__(self, *args: Any, **kwargs: Any) -> AuditReport:
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
