"""``audit_model``: every check in both modes, and the pytest helpers."""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..train import evaluating
from .checks import (
    MAX_CUTS,
    RANDOM_NOTE,
    _cap,
    _check_batch,
    _check_batch_size,
    _check_causal,
    _check_padding,
    _cuts,
    _default_rtol,
    _float_floor,
    _is_causal,
    _judge,
    _Progress,
    _Runner,
    dropout_off,
)
from .inputs import (
    BatchDim,
    PaddingSpec,
    _base_pad,
    _cast,
    _describe,
    _Inputs,
    _output,
    _rel,
)
from .inventory import norm_inventory
from .report import MODES, PROPERTIES, AuditReport, CheckResult

__all__ = ["audit_model", "assert_audit", "assert_batch_independent"]

Output = Union[None, str, int, Callable[[Any], torch.Tensor]]


def audit_model(
    model: nn.Module,
    example_inputs: Any,
    *,
    properties: Optional[Sequence[str]] = None,
    modes: Sequence[str] = MODES,
    causal: Optional[bool] = None,
    padding: Optional[PaddingSpec] = None,
    pad_length: Optional[int] = None,
    primary: Optional[str] = None,
    batch_dim: int = 0,
    output: Output = None,
    dtype: Optional[torch.dtype] = None,
    trials: int = 3,
    max_cuts: int = MAX_CUTS,
    rtol: Optional[float] = None,
    seed: int = 0,
    progress: bool = False,
    name: Optional[str] = None,
) -> AuditReport:
    """Measure batch coupling, batch-size dependence, causal leakage, padding
    invariance and the train/eval gap.

    Args:
        model: the module to audit; its parameters are not changed and its buffers
            (running statistics) are restored afterwards. The float floor runs a
            float64 copy of it (a float32 copy for a float64 model): plan for the
            extra memory.
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword
            inputs. Dim 0 of the *primary* input is the batch (B >= 2); for the causal
            and padding checks, dim 1 is the sequence. Use real-looking data: ids are
            resampled from the ids present, floats from N(mean, std) of the input.
        properties: any of "batch" (partners change), "batch_size" (the example
            alone and in a batch of 2B vs in B), "causal", "padding", "train_eval";
            default: every one that applies ("causal" if the model is causal,
            "padding" if ``padding`` is given). Asking for one that does not apply
            is an error.
        modes: "train" and/or "eval".
        causal: whether the model is causal; None: from the model (``is_causal``,
            ``config.is_decoder``, ``cfg.causal``, a ``...ForCausalLM`` class, a
            decoder-only ``config.model_type`` such as "bloom"; never
            for ``config.is_encoder_decoder``).
        padding: the model's mask convention (see ``PaddingSpec``).
        pad_length: pads added in the padding checks (default T // 2, at least 1).
        primary: positional index or keyword of the primary input (default: the
            model's ``main_input_name``, else the first of input_ids, pixel_values,
            inputs_embeds, idx, src, x, else the first).
        batch_dim: the dim of the primary input (and of the outputs) that is the
            batch, e.g. 1 for ``nn.TransformerEncoderLayer(batch_first=False)``;
            the audit then sees the model batch-first (``BatchDim``).
        output: which output to compare: a key (``"logits_per_image"``), an index
            into a tuple, or a function of the raw output; default: ``logits``,
            ``last_hidden_state``, else the first tensor batched along dim 0.
        dtype: audit a copy of the model in this dtype (float inputs cast too).
        trials: partner perturbations for the batch check; the report keeps the
            largest change.
        max_cuts: cut points of the causal check: every one up to this many, else an
            even spread of this many. Where the batch check found the outputs bit for
            bit independent of the partners, each forward tries B cuts at once, one
            per example (GPT-2 at B=4, T=32: 8 forwards instead of 31).
        rtol: relative change below which a property holds (raised to 10x the measured
            float floor when that floor is larger). Default: 1e-5 for float32,
            float16 and bfloat16 outputs (whose tolerance comes from the measured
            floor, not the dtype's epsilon), about 2e-14 for float64.
        seed: seeds the perturbations and the random state shared by the forwards.
        progress: draw a progress bar on stderr.
        name: the model's name in the report.

    Returns:
        An ``AuditReport``; ``report.table()`` prints it, ``report.failures()`` lists
        what failed, ``report.inconclusives()`` what could not be decided.

    Example:
        >>> import torch, lnbn_utils as lu
        >>> model = lu.TinyTransformer(lu.TransformerConfig(norm="batch"))
        >>> report = lu.audit_model(model, torch.randint(0, 64, (4, 16)))
        >>> report.get("batch", "train").holds, report.get("batch", "eval").holds
        (False, True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"expected model to be a torch.nn.Module, got {type(model).__name__}"
        )
    if dtype is not None:
        model = copy.deepcopy(model).to(dtype)
    main_name = getattr(model, "main_input_name", None)
    inp = _Inputs.wrap(example_inputs, primary, main_name)
    named = model
    if batch_dim:
        inp, model = _batch_first(inp, model, batch_dim)
    if dtype is not None:
        inp = _cast(inp, dtype)
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
    is_causal = _is_causal(named) if causal is None else bool(causal)
    props = _resolve_properties(properties, is_causal, padding, x)
    if "padding" in props:
        _base_pad(inp, padding)  # a mask of the wrong shape: a clear error up front
    if max_cuts < 1:
        raise ValueError(f"expected max_cuts >= 1, got {max_cuts}")
    n = _count_forwards(props, modes, trials, padding, x, max_cuts)
    bar = _Progress(n, progress)
    run = _Runner(model, seed, bar, B, _selector(output, B))
    g = torch.Generator().manual_seed(seed)
    k = pad_length or max(1, x.shape[1] // 2 if x.dim() >= 2 else 1)
    checks: list[CheckResult] = []
    used_rtol: dict[str, Any] = {}
    with evaluating(model):
        for mode in modes:
            model.train(mode == "train")
            checks += _audit_mode(
                run,
                inp,
                mode,
                props,
                trials,
                g,
                padding,
                k,
                rtol,
                bar,
                used_rtol,
                max_cuts,
            )
        if "train_eval" in props:
            bar.label = "train_eval"
            checks.append(_train_eval(run, inp, model, rtol, used_rtol))
    bar.close()
    inventory = norm_inventory(model)
    settings = {
        "trials": trials,
        "rtol": rtol if rtol is not None else used_rtol.get("rtol", 1e-5),
        "seed": seed,
        "pad_length": k,
        "max_cuts": max_cuts,
        "modes": list(modes),
        "output": _output_name(output),
        "batch_dim": batch_dim,
    }
    shape = _describe(inp)
    return AuditReport(
        name or type(named).__name__, checks, inventory, shape, is_causal, settings
    )


def _batch_first(inp: _Inputs, model: nn.Module, dim: int) -> tuple[_Inputs, nn.Module]:
    """The inputs with the primary's batch at dim 0, and the model wrapped to match."""
    x = inp.get()
    ndim = x.dim() if isinstance(x, torch.Tensor) else 0
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim < ndim:
        raise ValueError(
            f"expected batch_dim in 0..{max(ndim - 1, 0)} for the primary input, "
            f"got {dim!r} ({_describe(inp)})"
        )
    return inp.replace(x.movedim(dim, 0)), BatchDim(model, inp.primary, dim)


def _selector(output: Output, B: int) -> Optional[Callable[[Any], torch.Tensor]]:
    """A function that picks the compared tensor from the model's raw output."""
    if output is None or callable(output):
        return output

    def pick(raw: Any) -> torch.Tensor:
        try:
            got = raw[output]
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError(
                f"expected the model's output to have {output!r}, "
                f"got {type(raw).__name__}"
            ) from e
        return _output(got, B)

    return pick


def _output_name(output: Output) -> str:
    if output is None:
        return "logits / last_hidden_state / first batched tensor"
    return getattr(output, "__name__", repr(output))


def _resolve_properties(
    props: Optional[Sequence[str]],
    causal: bool,
    padding: Optional[PaddingSpec],
    x: torch.Tensor,
) -> list[str]:
    if props is None:
        props = (
            ["batch", "batch_size"]
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
    max_cuts: int = MAX_CUTS,
) -> int:
    per_mode = 3 + ("batch" in props) * (1 + 2 * trials)  # 3: the float floor
    per_mode += ("batch_size" in props) * 4
    if "causal" in props:
        per_mode += 1 + len(_cuts(x.shape[1], max_cuts))
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
    max_cuts: int = MAX_CUTS,
) -> list[CheckResult]:
    """The batch, batch-size, causal and padding checks in the current mode."""
    out = []
    B = inp.get().shape[0]
    bar.label = f"floor/{mode}"
    floor, dt, fnote = _float_floor(run, inp)
    tol = _default_rtol(dt) if rtol is None else rtol
    cap = _cap(dt)
    # shapes change in these checks, so equal seeds would not give equal dropout
    # masks: dropout is off, and said so only when nothing else is random
    off = "dropout off" if mode == "train" and RANDOM_NOTE not in fnote else ""
    ctx = dropout_off if mode == "train" else lambda m: contextlib.nullcontext()
    if used is not None:
        used["rtol"] = tol
        used[f"floor/{mode}"] = (floor, fnote)
    independent = False  # outputs bit for bit independent of the partners
    if "batch" in props:
        bar.label = f"batch/{mode}"
        change, unctl = _check_batch(run, inp, B, trials, g)
        independent = change == 0
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
    note = "; ".join(filter(None, [off, fnote]))
    if "batch_size" in props:
        bar.label = f"batch_size/{mode}"
        with ctx(run.model):
            change = _check_batch_size(run, inp, B, g)
        out.append(_judge("batch_size", mode, change, floor, tol, cap, note=note))
    if "causal" in props:
        bar.label = f"causal/{mode}"
        change = _check_causal(run, inp, g, max_cuts, per_example=independent)
        out.append(_judge("causal", mode, change, floor, tol, cap, note=fnote))
    if "padding" in props:
        bar.label = f"padding/{mode}"
        with ctx(run.model):
            res = _check_padding(run, inp, padding, k, g)
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
    tol = _default_rtol(ev.dtype) if rtol is None else rtol
    model.train()
    raw = _rel(run(inp), ev)
    with dropout_off(model):
        change = _rel(run(inp), ev)
    off = "" if RANDOM_NOTE in fnote else "dropout off"
    note = "; ".join(filter(None, [off, fnote]))
    return _judge(
        "train_eval",
        "train->eval",
        change,
        floor,
        tol,
        _cap(ev.dtype),
        note=note,
        uncontrolled=raw,
    )


def assert_audit(
    model: nn.Module,
    example_inputs: Any,
    require: Sequence[str] = ("batch", "batch_size"),
    **kwargs: Any,
) -> AuditReport:
    """Fail (``AssertionError``) unless every required property holds.

    For a team's own test suite::

        def test_my_model_is_batch_independent():
            lu.assert_audit(make_model(), batch, require=["batch:eval", "padding"])

    Args:
        require: properties as ``"prop"`` or ``"prop:mode"`` (e.g. ``"batch:eval"``,
            ``"causal"``, ``"padding:left"``); an inconclusive one fails too.
        **kwargs: passed to ``audit_model`` (``padding=``, ``modes=``, ...).

    Returns:
        The report, when everything required holds.
    """
    if isinstance(require, str):
        require = [require]
    props = sorted({r.partition(":")[0] for r in require})
    kwargs.setdefault("properties", props)
    report = audit_model(model, example_inputs, **kwargs)
    bad = report.failures(require)
    undecided = [c for c in report.inconclusives() if _required(c, require)]
    if bad or undecided:
        raise AssertionError(_failure_message(report, bad + undecided))
    return report


def assert_batch_independent(
    model: nn.Module,
    example_inputs: Any,
    modes: Sequence[str] = ("eval",),
    bitwise: bool = False,
    **kwargs: Any,
) -> AuditReport:
    """Fail unless each example's output is independent of its batch.

    Checks "batch" (the partners change) and "batch_size" (alone, in B, in 2B) in
    ``modes``. With ``bitwise=True`` the "batch" outputs must also be identical bit
    for bit (same shapes: any nonzero change is evidence of coupling on a CPU).
    """
    require = [f"{p}:{m}" for p in ("batch", "batch_size") for m in modes]
    kwargs.setdefault("modes", tuple(modes))
    report = assert_audit(model, example_inputs, require, **kwargs)
    moved = [c for c in report.checks if c.property == "batch" and not c.bitwise]
    if bitwise and moved:
        raise AssertionError(_failure_message(report, moved, "not bitwise"))
    return report


def _required(c: CheckResult, require: Sequence[str]) -> bool:
    for r in require:
        prop, _, mode = r.partition(":")
        if (c.property == prop or c.property.startswith(prop + ":")) and mode in (
            "",
            c.mode,
        ):
            return True
    return False


def _failure_message(report: AuditReport, bad: list[CheckResult], why: str = "") -> str:
    """Which property, which mode, how large, against which tolerance and floor."""
    lines = [f"{report.model} ({report.shape}): {len(bad)} required check(s) failed"]
    for c in bad:
        what = why or c.verdict
        lines.append(
            f"  {c.property} in {c.mode} mode: {what}: relative change {c.change:.3g}"
            f" > tolerance {c.tol:.3g} (float floor {c.floor:.3g})"
            + (f"; {c.note}" if c.note else "")
        )
    lines.append(report.table())
    return "\n".join(lines)


def audit(*args: Any, **kwargs: Any) -> AuditReport:
    """Alias of ``audit_model``."""
    return audit_model(*args, **kwargs)
