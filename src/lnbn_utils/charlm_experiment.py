"""The character-level language-model experiments of chapter 3 (chapter 5 uses its
``StabilitySetup``, ``token_losses`` and ``unigram_token_losses`` in its own loop).

Experiments, not tools: each function here trains models and is shown in the chapter
that reports its numbers. ``probes.py`` holds the measurements they use (TID).

* ``train_char_lm``: one char-LM run whose normalization batch is (batch_size,
  block_size); the unit of chapter 3's group-size experiment.
* ``token_losses``: per-token validation losses in train or eval mode, for paired
  comparisons over evaluation sequences and for reading off single positions.
* ``stability_run`` / ``stability_sweep``: the stability regime, a deeper model at
  learning rates where "no norm" diverges, swept over learning rate x seed, on
  fixed-length windows or on padded natural lines of variable length
  (``line_batch``).
* ``lu.GhostBatchNorm`` and ``lu.PositionBatchNorm`` (in ``norms.py``): the BN
  controls these experiments train with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._args import check_int
from .data import CharCorpus
from .models import TinyTransformer, TransformerConfig
from .norms import (  # noqa: F401  (the two BN controls live in norms.py)
    GhostBatchNorm,
    PositionBatchNorm,
    make_norm,
)
from .probes import TIDRecorder
from .repro import seed_everything
from .train import History, evaluating, lm_loss, train

__all__ = [
    "build_char_lm",
    "CharLMRun",
    "train_char_lm",
    "token_losses",
    "unigram_token_losses",
    "line_batch",
    "padded_lm_loss",
    "GRAD_BLOWUP",
    "StabilitySetup",
    "StabilityResult",
    "stability_run",
    "stability_sweep",
]


# --- one char-LM run ------------------------------------------------------------------


def build_char_lm(
    vocab_size: int,
    block_size: int,
    norm: str,
    *,
    n_layer: int = 2,
    n_head: int = 2,
    n_embd: int = 32,
    norm_position: str = "pre",
    norm_kwargs: Optional[dict] = None,
    final_norm: Optional[str] = None,
) -> TinyTransformer:
    """A ``TinyTransformer`` LM whose norms are ``make_norm(norm, C, **norm_kwargs)``.

    Norm layers draw no random numbers, so for a given torch seed the weights do not
    depend on ``norm`` (every norm starts from the same model). ``final_norm``, if
    given, replaces the norm before the head of a pre-norm model (e.g. norm="none",
    final_norm="layer": a single LayerNorm, none in the blocks).
    """
    if final_norm is not None and norm_position != "pre":
        raise ValueError(
            f"expected final_norm only with norm_position='pre', got {norm_position!r}"
        )
    cfg = TransformerConfig(
        vocab_size=vocab_size,
        block_size=block_size,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        norm=norm,
        norm_position=norm_position,
    )
    model = TinyTransformer(cfg)
    if norm_kwargs:
        for block in model.blocks:
            block.norm1 = make_norm(norm, n_embd, **norm_kwargs)
            block.norm2 = make_norm(norm, n_embd, **norm_kwargs)
        if norm_position == "pre":
            model.norm_f = make_norm(norm, n_embd, **norm_kwargs)
    if final_norm is not None:
        model.norm_f = make_norm(final_norm, n_embd)
    return model


@dataclass
class CharLMRun:
    """What ``train_char_lm`` returns: model, history, and the TID probe (or None)."""

    model: TinyTransformer
    history: History
    tid: Optional[TIDRecorder] = None


def train_char_lm(
    corpus: CharCorpus,
    norm: str,
    batch_size: int,
    block_size: int,
    *,
    steps: int,
    seed: int,
    n_layer: int = 2,
    n_head: int = 2,
    n_embd: int = 32,
    norm_position: str = "pre",
    norm_kwargs: Optional[dict] = None,
    lr: float = 3e-3,
    warmup_steps: int = 0,
    grad_clip: Optional[float] = None,
    n_val_batches: int = 32,
    record_tid: bool = False,
    extra_loss: Optional[Callable[[nn.Module], torch.Tensor]] = None,
) -> CharLMRun:
    """Train a char-level LM that normalizes over batch_size x block_size tokens.

    Every step draws ``batch_size`` windows of ``block_size`` characters, so a BN
    layer normalizes over batch_size * block_size tokens. The model and the training
    windows depend only on ``seed`` (not on ``norm``): runs with different norms see
    the same data from the same initial weights. At the end the validation loss on
    ``n_val_batches`` fixed batches of the same shape is recorded in train and eval
    mode (``history.val_loss_*_mode``); ``n_val_batches=0`` skips it (use
    ``token_losses`` for a larger, shared validation set).

    ``extra_loss`` is passed to ``lu.train`` (e.g. ``lu.stat_penalty`` for norm="rbn").

    Returns: ``CharLMRun(model, history, tid)``; ``tid`` is a ``TIDRecorder`` when
    ``record_tid`` is True (the model must then have BN-like layers), else None.
    """
    check_int("batch_size", batch_size, 1)
    check_int("block_size", block_size, 2)
    check_int("n_val_batches", n_val_batches, 0)
    check_int("seed", seed)
    check_int("steps", steps, 1)
    g_val = torch.Generator().manual_seed(
        seed + 7919
    )  # validation windows: fixed per seed
    val = [
        corpus.batch("val", batch_size, block_size, g_val) for _ in range(n_val_batches)
    ]
    g = seed_everything(seed)
    model = build_char_lm(
        corpus.vocab_size,
        block_size,
        norm,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        norm_position=norm_position,
        norm_kwargs=norm_kwargs,
    )
    probe = TIDRecorder(model).attach() if record_tid else None
    try:
        hist = train(
            model,
            lambda: corpus.batch("train", batch_size, block_size, g),
            steps=steps,
            lr=lr,
            val_batches=val,
            eval_every=steps if val else 0,
            warmup_steps=warmup_steps,
            grad_clip=grad_clip,
            extra_loss=extra_loss,
        )
    finally:
        if probe is not None:
            probe.detach()
    return CharLMRun(model, hist, probe)


@torch.no_grad()
def token_losses(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    mode: str = "eval",
) -> torch.Tensor:
    """Next-character loss (nats) of every validation token, in "train" or "eval" mode.

    In "train" mode BN-like layers normalize each batch with its own statistics (as in
    training); their running statistics are restored afterwards, so the model is left
    unchanged. Keeping every token's loss allows paired intervals over sequences and
    reading off single positions (e.g. the last one, which has no future tokens).

    Shape: batches of (inputs (B, T), targets (B, T)) -> (n_batches * B, T).
    """
    if len(batches) == 0:
        raise ValueError("expected at least one (inputs, targets) batch, got none")
    out = []
    with evaluating(model, mode):  # buffers and train flags restored, even on errors
        for x, y in batches:
            logits = model(x)  # (B, T, V)
            nll = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, T)
            out.append(nll)
    return torch.cat(out)


def unigram_token_losses(
    corpus: CharCorpus, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """The losses of a model that knows only the training text's character frequencies.

    The baseline every LM must beat; add-one smoothing gives characters absent from the
    training text a finite loss.

    Shape: -> (n_batches * B, T), like ``token_losses``.
    """
    counts = torch.bincount(corpus.train, minlength=corpus.vocab_size).float() + 1
    nll = -(counts / counts.sum()).log()  # (V,)
    return torch.cat([nll[y] for _, y in batches])


# --- the stability regime -------------------------------------------------------------


@dataclass(frozen=True)
class StabilitySetup:
    """A deeper char-LM trained briefly at a fixed learning rate: where norms matter.

    Pre-norm, GPT-2 initialization, AdamW with a short linear warm-up and no gradient
    clipping (clipping would hide the divergence this setup exists to show).
    """

    n_layer: int = 4
    n_embd: int = 32
    n_head: int = 2
    batch_size: int = 8  # windows per step
    block_size: int = 16  # characters per window: 128 tokens per step
    steps: int = 80
    warmup_steps: int = 10
    n_val_batches: int = 16  # 2,048 validation tokens, eval mode
    norm_position: str = "pre"
    final_norm: Optional[str] = None  # e.g. "layer" with norm "none": final LN only
    # None: windows of block_size characters; (lo, hi): natural lines of lo..hi
    # characters, padded to the longest of the batch (block_size must be >= hi)
    lengths: Optional[tuple[int, int]] = None

    def __post_init__(self) -> None:
        if self.lengths is not None:
            lo, hi = self.lengths
            if not 2 <= lo <= hi <= self.block_size:
                raise ValueError(
                    "expected lengths (lo, hi) with 2 <= lo <= hi <= block_size="
                    f"{self.block_size}, got {self.lengths}"
                )


# A gradient-norm blow-up: three orders of magnitude above the gradient norm of these
# models at initialization (about 0.2-4), set from that scale, not from the runs.
GRAD_BLOWUP = 1e3


@dataclass
class StabilityResult:
    """One run of ``stability_run``.

    ``val_loss`` is the eval-mode validation loss in nats/char over real tokens (inf
    when training became non-finite); ``diverged``: training became non-finite or
    ended worse than the uniform prediction it starts from (log V nats/char), an
    instability; ``failed``: diverged, or ended no better than ``baseline``, the
    character-frequency (unigram) loss on the same validation tokens.
    ``max_grad_norm`` is the largest gradient norm of the run; ``blew_up``: it
    exceeded ``GRAD_BLOWUP``; ``unstable``: diverged or blew up; ``slow``: failed
    without being unstable (slow learning, not instability).
    """

    norm: str
    lr: float
    seed: int
    val_loss: float
    diverged: bool
    failed: bool
    baseline: float
    train_loss: list[float] = field(repr=False, default_factory=list)
    grad_norm: list[float] = field(repr=False, default_factory=list)

    @property
    def slow(self) -> bool:
        return self.failed and not self.unstable

    @property
    def max_grad_norm(self) -> float:
        return max(self.grad_norm, default=math.nan)

    @property
    def blew_up(self) -> bool:
        return not self.max_grad_norm <= GRAD_BLOWUP

    @property
    def unstable(self) -> bool:
        return self.diverged or self.blew_up


_LINES: dict[tuple[int, str, int, int], list[torch.Tensor]] = {}


def _lines(corpus: CharCorpus, split: str, lo: int, hi: int) -> list[torch.Tensor]:
    """The split's lines of lo..hi characters, each with its newline appended."""
    key = (id(corpus), split, lo, hi)
    if key not in _LINES:
        data = corpus.train if split == "train" else corpus.val
        nl = corpus.stoi.get("\n")
        if nl is None:
            raise ValueError("expected a corpus with newlines to split into lines")
        ends = (data == nl).nonzero().flatten().tolist()
        starts = [0] + [e + 1 for e in ends[:-1]]
        lines = [data[a : e + 1] for a, e in zip(starts, ends) if lo <= e - a <= hi]
        if not lines:
            raise ValueError(f"expected lines of {lo}..{hi} characters, found none")
        _LINES[key] = lines
    return _LINES[key]


def line_batch(
    corpus: CharCorpus,
    split: str,
    batch_size: int,
    generator: torch.Generator,
    lengths: tuple[int, int] = (8, 32),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``batch_size`` random natural lines of lengths[0]..lengths[1] characters, padded.

    Each line predicts its next character, the last one its newline. Lines are padded
    at the end to the longest of the batch: inputs with token 0, targets with -100
    (ignored by the loss), and the padding mask is True there.

    Shape: -> inputs (B, L), targets (B, L), padding_mask (B, L), L = longest line.
    """
    if split not in ("train", "val"):
        raise ValueError(f"expected split 'train' or 'val', got {split!r}")
    if batch_size < 1:
        raise ValueError(f"expected batch_size >= 1, got {batch_size}")
    lines = _lines(corpus, split, *lengths)
    pick = torch.randint(len(lines), (batch_size,), generator=generator).tolist()
    seqs = [lines[i] for i in pick]  # each (L_i + 1,): the line and its newline
    L = max(len(q) for q in seqs) - 1
    x = torch.zeros(batch_size, L, dtype=torch.long)
    y = torch.full((batch_size, L), -100, dtype=torch.long)
    for b, q in enumerate(seqs):
        x[b, : len(q) - 1], y[b, : len(q) - 1] = q[:-1], q[1:]
    return x, y, y < 0


def padded_lm_loss(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Next-character cross-entropy over the real tokens of a ``line_batch``."""
    x, y, pad = batch
    logits = model(x, pad)  # (B, L, V)
    return F.cross_entropy(logits.transpose(1, 2), y, ignore_index=-100)


def _stability_batch(
    corpus: CharCorpus, split: str, s: StabilitySetup, g: torch.Generator
) -> tuple:
    if s.lengths is None:
        return corpus.batch(split, s.batch_size, s.block_size, g)
    return line_batch(corpus, split, s.batch_size, g, s.lengths)


def _stability_val(corpus: CharCorpus, s: StabilitySetup) -> list:
    g_val = torch.Generator().manual_seed(20_240_601)  # the same windows for every run
    return [_stability_batch(corpus, "val", s, g_val) for _ in range(s.n_val_batches)]


@torch.no_grad()
def _mean_val_loss(model: nn.Module, val: list) -> float:
    """Eval-mode loss (nats/char) averaged over every real validation token."""
    model.eval()
    total, n = 0.0, 0
    for batch in val:
        x, y = batch[0], batch[1]
        logits = model(x, batch[2]) if len(batch) == 3 else model(x)
        nll = F.cross_entropy(logits.transpose(1, 2), y, reduction="sum")
        total, n = total + float(nll), n + int((y >= 0).sum())
    return total / n


def _unigram_val(corpus: CharCorpus, val: list) -> float:
    counts = torch.bincount(corpus.train, minlength=corpus.vocab_size).float() + 1
    nll = -(counts / counts.sum()).log()  # (V,)
    ys = torch.cat([b[1].flatten() for b in val])
    return float(nll[ys[ys >= 0]].mean())


def stability_run(
    corpus: CharCorpus,
    norm: str,
    lr: float,
    seed: int,
    setup: StabilitySetup = StabilitySetup(),
    baseline: Optional[float] = None,
) -> StabilityResult:
    """Train one ``StabilitySetup`` model with ``norm`` at learning rate ``lr``.

    The validation batches are the same for every norm, learning rate and seed (drawn
    from a fixed generator), so results can be paired. ``baseline`` is the loss a run
    must beat to count as trained (default: the unigram loss on the same tokens).
    With ``setup.lengths`` the model trains on padded natural lines
    (``line_batch``), the padding mask reaching every norm (which may ignore it).

    Example:
        >>> r = stability_run(CharCorpus(), "layer", 3e-3, seed=0)  # doctest: +SKIP
        >>> r.val_loss, r.diverged, r.slow  # doctest: +SKIP
    """
    s = setup
    val = _stability_val(corpus, s)
    if baseline is None:
        baseline = _unigram_val(corpus, val)
    g = seed_everything(seed)
    model = build_char_lm(
        corpus.vocab_size,
        s.block_size,
        norm,
        n_layer=s.n_layer,
        n_head=s.n_head,
        n_embd=s.n_embd,
        norm_position=s.norm_position,
        final_norm=s.final_norm,
    )
    hist = train(
        model,
        lambda: _stability_batch(corpus, "train", s, g),
        lm_loss if s.lengths is None else padded_lm_loss,
        steps=s.steps,
        lr=lr,
        warmup_steps=s.warmup_steps,
    )
    val_loss = math.inf
    if len(hist.train_loss) == s.steps and math.isfinite(hist.train_loss[-1]):
        val_loss = _mean_val_loss(model, val)
    # diverged: non-finite, or ended worse than the uniform guess it started from
    diverged = not val_loss <= math.log(corpus.vocab_size)
    val_loss = val_loss if math.isfinite(val_loss) else math.inf
    failed = diverged or val_loss >= baseline
    return StabilityResult(
        norm, lr, seed, val_loss, diverged, failed, baseline, hist.train_loss,
        hist.grad_norm,
    )  # fmt: skip


def stability_sweep(
    corpus: CharCorpus,
    norms: Sequence[str],
    lrs: Sequence[float],
    seeds: Sequence[int],
    setup: StabilitySetup = StabilitySetup(),
) -> dict[tuple[str, float, int], StabilityResult]:
    """``stability_run`` for each norm, learning rate, seed: {(norm, lr, seed): run}."""
    if not norms or not lrs or not seeds:
        raise ValueError(
            "expected non-empty norms, lrs and seeds, "
            f"got {len(norms)}, {len(lrs)}, {len(seeds)}"
        )
    baseline = _unigram_val(corpus, _stability_val(corpus, setup))
    return {
        (norm, lr, seed): stability_run(corpus, norm, lr, seed, setup, baseline)
        for norm in norms
        for lr in lrs
        for seed in seeds
    }
