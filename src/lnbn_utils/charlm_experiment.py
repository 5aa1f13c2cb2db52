"""The character-level language-model experiments of chapters 3 and 5.

Experiments, not tools: each function here trains models and is shown in the chapter
that reports its numbers. ``probes.py`` holds the measurements they use (TID).

* ``train_char_lm``: one char-LM run whose normalization batch is (batch_size,
  block_size); the unit of chapter 3's group-size experiment and of chapter 5.
* ``token_losses``: per-token validation losses in train or eval mode, for paired
  comparisons over evaluation sequences and for reading off single positions.
* ``stability_run`` / ``stability_sweep``: the stability regime, a deeper model at
  learning rates where "no norm" diverges, swept over learning rate x seed.
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

from .data import CharCorpus
from .models import TinyTransformer, TransformerConfig
from .norms import (  # noqa: F401  (the two BN controls live in norms.py)
    GhostBatchNorm,
    PositionBatchNorm,
    make_norm,
)
from .probes import TIDRecorder
from .repro import seed_everything
from .train import History, evaluating, train

__all__ = [
    "build_char_lm",
    "CharLMRun",
    "train_char_lm",
    "token_losses",
    "unigram_token_losses",
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
) -> TinyTransformer:
    """A ``TinyTransformer`` LM whose norms are ``make_norm(norm, C, **norm_kwargs)``.

    Norm layers draw no random numbers, so for a given torch seed the weights do not
    depend on ``norm`` (every norm starts from the same model).
    """
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
    if batch_size < 1 or block_size < 2 or n_val_batches < 0:
        raise ValueError(
            "expected batch_size >= 1, block_size >= 2, n_val_batches >= 0, "
            f"got {batch_size}, {block_size}, {n_val_batches}"
        )
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


@dataclass
class StabilityResult:
    """One run of ``stability_run``.

    ``val_loss`` is the eval-mode validation loss in nats/char (inf when training
    became non-finite); ``diverged``: training became non-finite or ended worse than
    the uniform prediction it starts from (log V nats/char); ``failed``: diverged,
    or ended no better than ``baseline``, the character-frequency (unigram) loss on the
    same validation windows.
    """

    norm: str
    lr: float
    seed: int
    val_loss: float
    diverged: bool
    failed: bool
    baseline: float
    train_loss: list[float] = field(repr=False, default_factory=list)


def _stability_val(corpus: CharCorpus, s: StabilitySetup) -> list:
    g_val = torch.Generator().manual_seed(20_240_601)  # the same windows for every run
    return [
        corpus.batch("val", s.batch_size, s.block_size, g_val)
        for _ in range(s.n_val_batches)
    ]


def stability_run(
    corpus: CharCorpus,
    norm: str,
    lr: float,
    seed: int,
    setup: StabilitySetup = StabilitySetup(),
    baseline: Optional[float] = None,
) -> StabilityResult:
    """Train one ``StabilitySetup`` model with ``norm`` at learning rate ``lr``.

    The validation windows are the same for every norm, learning rate and seed (drawn
    from a fixed generator), so results can be paired. ``baseline`` is the loss a run
    must beat to count as trained (default: the unigram loss on the same windows).

    Example (the chapter-5 sweep reuses this):
        >>> r = stability_run(CharCorpus(), "layer", 3e-3, seed=0)  # doctest: +SKIP
        >>> r.val_loss, r.diverged, r.failed  # doctest: +SKIP
    """
    s = setup
    val = _stability_val(corpus, s)
    if baseline is None:
        baseline = float(unigram_token_losses(corpus, val).mean())
    g = seed_everything(seed)
    model = build_char_lm(
        corpus.vocab_size,
        s.block_size,
        norm,
        n_layer=s.n_layer,
        n_head=s.n_head,
        n_embd=s.n_embd,
        norm_position=s.norm_position,
    )
    hist = train(
        model,
        lambda: corpus.batch("train", s.batch_size, s.block_size, g),
        steps=s.steps,
        lr=lr,
        warmup_steps=s.warmup_steps,
    )
    val_loss = math.inf
    if len(hist.train_loss) == s.steps and math.isfinite(hist.train_loss[-1]):
        val_loss = float(token_losses(model, val).mean())
    # diverged: non-finite, or ended worse than the uniform guess it started from
    diverged = not val_loss <= math.log(corpus.vocab_size)
    val_loss = val_loss if math.isfinite(val_loss) else math.inf
    failed = diverged or val_loss >= baseline
    return StabilityResult(
        norm, lr, seed, val_loss, diverged, failed, baseline, hist.train_loss
    )


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
    baseline = float(unigram_token_losses(corpus, _stability_val(corpus, setup)).mean())
    return {
        (norm, lr, seed): stability_run(corpus, norm, lr, seed, setup, baseline)
        for norm in norms
        for lr in lrs
        for seed in seeds
    }
