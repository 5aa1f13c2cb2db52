"""The probes: float floor, batch, batch size, causal and padding checks."""

from __future__ import annotations

import contextlib
import copy
import random
import sys
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn as nn

from .inputs import (
    PaddingSpec,
    _base_pad,
    _cast,
    _describe,
    _expand,
    _Inputs,
    _output,
    _pad,
    _perturbed,
    _rel,
)
from .report import CheckResult


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


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch, numpy and Python's ``random``; restore their states on exit."""
    state = random.getstate()
    try:
        import numpy as np
    except ImportError:  # numpy is optional: nothing to seed
        np = None
    np_state = np.random.get_state() if np is not None else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        if np is not None:
            np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(state)
            if np is not None:
                np.random.set_state(np_state)


class _Runner:
    """Calls the model under a fixed random state and restores its buffers after.

    Every forward starts from the buffers the model had when the audit began, so a
    layer that keeps state between forwards (running statistics) cannot turn its
    drift into an apparent coupling. ``select`` picks the output to compare.
    """

    def __init__(
        self,
        model: nn.Module,
        seed: int,
        progress: "_Progress",
        B: int,
        select: Optional[Callable[[Any], torch.Tensor]] = None,
    ) -> None:
        self.model, self.seed, self.progress, self.B = model, seed, progress, B
        self.select = select
        self.saved = [(b, b.detach().clone()) for b in model.buffers()]

    def __call__(
        self, inp: _Inputs, rng: int = 0, model: Optional[nn.Module] = None
    ) -> torch.Tensor:
        model = self.model if model is None else model
        with _seeded(self.seed + 7919 * rng), torch.no_grad():
            try:
                raw = model(*inp.args, **inp.kwargs)
            except (TypeError, ValueError, RuntimeError, IndexError) as e:
                raise ValueError(
                    f"expected the model to accept the audit's inputs "
                    f"({_describe(inp)}), but it raised {type(e).__name__}: {e}"
                ) from e
            finally:
                for live, keep in self.saved if model is self.model else ():
                    live.copy_(keep)
        self.progress.step()
        return self.select(raw) if self.select else _output(raw, self.B)


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


# transformers ``config.model_type`` of decoder-only families: their base models
# (``BloomModel``, ``OPTModel``, ...) are causal without saying so in an attribute
DECODER_ONLY = frozenset(
    "bloom codegen ctrl falcon gemma gemma2 gpt2 gpt_bigcode gpt_neo gpt_neox gptj "
    "llama mistral mixtral mpt olmo openai-gpt opt phi phi3 qwen2 qwen3 stablelm "
    "starcoder2 xglm".split()
)


def _is_causal(model: nn.Module) -> bool:
    """Whether the model says it is causal (attribute, config, class, attention,
    or a decoder-only ``config.model_type``).

    An encoder-decoder (``config.is_encoder_decoder``) is never auto-detected as
    causal: its decoder attends to the whole encoder input.
    """
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) is True:
        return False
    if getattr(config, "model_type", None) in DECODER_ONLY:
        return True  # e.g. BloomModel: its causal mask is built inside forward
    for obj in (model, getattr(model, "config", None), getattr(model, "cfg", None)):
        for attr in ("is_causal", "causal", "is_decoder"):
            if isinstance(getattr(obj, attr, None), bool) and getattr(obj, attr):
                return True
    if type(model).__name__.endswith(("ForCausalLM", "LMHeadModel")):
        return True
    # transformers marks each attention layer: GPT2Attention.is_causal is True
    return any(getattr(m, "is_causal", None) is True for m in model.modules())


FLOOR_CAP = 1e-3  # a float32 "floor" above this is not rounding
REDUCED_CAP = 0.05  # the same for float16 / bfloat16 outputs
RTOL32 = 1e-5  # default rtol for float32, float16 and bfloat16 outputs
EPS32 = torch.finfo(torch.float32).eps
RANDOM_NOTE = "random beyond dropout: floor not measured"


def _default_rtol(dtype: torch.dtype) -> float:
    """1e-5, scaled down by the epsilon ratio for float64 (about 2e-14).

    Reduced precision (float16, bfloat16) keeps 1e-5: its tolerance comes from the
    measured floor (10x), never from the dtype's epsilon, so a coupling of 0.1 in
    bfloat16 is not tolerated as rounding.
    """
    if dtype == torch.float64:
        return RTOL32 * torch.finfo(dtype).eps / EPS32
    return RTOL32


def _cap(dtype: torch.dtype) -> float:
    return REDUCED_CAP if dtype in (torch.float16, torch.bfloat16) else FLOOR_CAP


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
    """Holds when the change is within max(rtol, 10 x floor) and the floor is rounding.

    A change above tolerance in a model that is random beyond dropout (the floor
    step saw two differently seeded forwards disagree) is "inconclusive": the
    audit cannot tell coupling from randomness it does not control.
    """
    tol = max(rtol, 10 * floor)
    holds = change <= tol and floor <= cap
    if floor > cap:
        note = "; ".join(filter(None, [note, "floor above its cap: not rounding"]))
    inconclusive = not holds and RANDOM_NOTE in note
    return CheckResult(
        prop,
        mode,
        change,
        floor,
        tol,
        holds,
        note=note,
        inconclusive=inconclusive,
        **kw,
    )


def _ends(B: int) -> list[int]:
    """0, B-1, 1, B-2, ...: both ends of the batch come first."""
    return [j for k in range((B + 1) // 2) for j in dict.fromkeys((k, B - 1 - k))]


def _check_batch(
    run: _Runner, inp: _Inputs, B: int, trials: int, g: torch.Generator
) -> tuple[float, float]:
    """(max change, max change without RNG control) of one example's output.

    The partners' primary input and every other input batched along dim 0 (masks,
    token types) are perturbed. The examples watched are taken from both ends of the
    batch, so two trials already see a coupling that reaches only the last example
    (a cumulative sum over the batch) or only the first.
    """
    base = run(inp)
    changes, unctl = [], []
    for t in range(trials):
        i = _ends(B)[t % B]
        others = torch.arange(B) != i
        moved = inp.map_batch(lambda v: _partners_perturbed(v, others, g), B)
        changes.append(_rel(run(moved)[i], base[i]))
        unctl.append(_rel(run(moved, rng=t + 1)[i], base[i]))
    return max(changes), max(unctl)


def _partners_perturbed(
    v: torch.Tensor, others: torch.Tensor, g: torch.Generator
) -> torch.Tensor:
    """``v`` with the partners' rows redrawn (a one-valued 0/1 mask: half padded)."""
    if v.dtype == torch.bool:
        return _partners_perturbed(v.long(), others, g).bool()
    y = v.clone()
    vals = v.unique()
    if v.is_floating_point() or len(vals) >= 2:
        y[others] = _perturbed(v[others], g).to(v.dtype)
    elif v.dim() >= 2 and vals.numel() == 1 and float(vals[0]) in (0.0, 1.0):
        half = v.shape[1] // 2  # an all-real (or all-zero) mask: pad the back half
        y[others, half:] = (1 - vals[0].long()).to(v.dtype)
    return y


def _check_batch_size(run: _Runner, inp: _Inputs, B: int, g: torch.Generator) -> float:
    """Max relative change of examples alone (B=1; B=2 if the model rejects B=1)
    and in a batch of 2B, vs in the batch of B.

    The 2B batch appends B fresh examples (perturbed copies of the batch). This is
    ``transformers``' ``test_batching_equivalence`` with a doubled batch added.
    """
    base = run(inp)
    changes = []
    try:  # a model that rejects B=1 in this mode (BatchNorm on (1, C)) gets B=2
        for i in _ends(B)[:2]:
            alone = run(inp.map_batch(lambda v: v[i : i + 1], B))
            changes.append(_rel(alone[0], base[i]))
    except ValueError:
        pair = run(inp.map_batch(lambda v: v[:2], B))
        changes.append(_rel(pair, base[:2]))
    others = torch.ones(B, dtype=torch.bool)
    extra = inp.map_batch(lambda v: _partners_perturbed(v, others, g), B)
    double = inp.concat(extra, B)
    changes.append(_rel(run(double)[:B], base))
    return max(changes)


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
            return 0.0, dt, RANDOM_NOTE
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
        return _rel(ref, out) * torch.finfo(dt).eps / EPS32, dt, ""
    return _rel(out, ref), dt, ""


MAX_CUTS = 32  # causal check: every cut point up to this many, else an even spread


def _cuts(T: int, max_cuts: int = MAX_CUTS) -> list[int]:
    """Cut points for the causal check: every t in 1..T-1 (at most ``max_cuts``)."""
    if T - 1 <= max_cuts:
        return list(range(1, T))
    grid = torch.linspace(1, T - 1, max_cuts).tolist()
    return sorted({int(round(v)) for v in grid})


def _check_causal(
    run: _Runner,
    inp: _Inputs,
    g: torch.Generator,
    max_cuts: int = MAX_CUTS,
    per_example: bool = False,
) -> float:
    """Max relative change of outputs before a cut when the inputs after it change.

    Every cut point is tried up to ``max_cuts`` (beyond it an even spread): a leak
    from position j to i < j shows only at cuts in (i, j], so with a spread a leak
    between neighbours is found only where a cut falls between them. With
    ``per_example`` (only for a model whose outputs were bit for bit independent of
    the batch partners) each forward tries B cuts, one per example: B times fewer
    forwards, each cut read on one example.
    """
    x = inp.get()
    B, T = x.shape[:2]
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
    cuts = _cuts(T, max_cuts)
    groups = [cuts[i : i + B] for i in range(0, len(cuts), B)] if per_example else []
    changes = []
    for group in groups:  # example b is cut at group[b]
        y, fresh = x.clone(), _perturbed(x, g)  # ids from the whole batch's
        for b, cut in enumerate(group):
            y[b, cut:] = fresh[b, cut:]
        out = run(inp.replace(y))
        changes += [_rel(out[b, :c], base[b, :c]) for b, c in enumerate(group)]
    for cut in cuts if not per_example else ():
        y = x.clone()
        y[:, cut:] = _perturbed(x[:, cut:], g)
        changes.append(_rel(run(inp.replace(y))[:, :cut], base[:, :cut]))
    return max(changes)


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
    if spec.output_length is not None:
        return _check_padding_mapped(run, inp, spec, k, g, base)
    per_token = base.dim() >= 2 and base.shape[1] == T
    real = ~base_pad  # (B, T)

    def at_real(out: torch.Tensor, orig: torch.Tensor) -> torch.Tensor:
        if not per_token and out.shape != base.shape:
            raise ValueError(
                f"expected outputs of one length per input length: T={T} gave "
                f"{tuple(base.shape)}, T={T + k} gave {tuple(out.shape)}; pass "
                "PaddingSpec(output_length=...) (e.g. the model's "
                "_get_feat_extract_output_lengths) or leave out the padding check"
            )
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


def _check_padding_mapped(
    run: _Runner,
    inp: _Inputs,
    spec: PaddingSpec,
    k: int,
    g: torch.Generator,
    base: torch.Tensor,
) -> dict[str, float]:
    """Right padding for a model whose output length is ``spec.output_length(T)``.

    The first ``output_length(T)`` output positions are compared (the example's own
    pads are not excluded: give an unpadded example batch).
    """
    if spec.sides != ("right",):
        raise ValueError(
            f"expected sides ('right',) with output_length, got {spec.sides!r}"
        )
    L = int(spec.output_length(inp.get().shape[1]))
    padded, pad, _ = _pad(inp, spec, k, "right")
    res = {"padding:length": _rel(run(padded)[:, :L], base[:, :L])}
    y = padded.get()
    other = padded.replace(torch.where(_expand(pad, y), _perturbed(y, g), y))
    res["padding:values"] = _rel(run(other)[:, :L], run(padded)[:, :L])
    return res
