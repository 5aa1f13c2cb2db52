"""A minimal, seeded training loop that records what the chapters plot."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["History", "train", "evaluate", "evaluating", "lm_loss", "classifier_loss"]

Batch = Any  # whatever batch_fn returns and loss_fn accepts
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy (nats/token) of (inputs (B, T), targets (B, T))."""
    x, y = batch
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def classifier_loss(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Cross-entropy for a batch (tokens (B, T), padding_mask (B, T), labels (B,))."""
    tokens, mask, labels = batch
    return F.cross_entropy(model(tokens, mask), labels)


@dataclass
class History:
    """Per-step training loss and gradient norm; validation losses at ``eval_steps``.

    ``val_loss_train_mode`` normalizes with each validation batch's own statistics
    (what the model saw in training); ``val_loss_eval_mode`` uses the running
    statistics (what it would use at inference). For LayerNorm the two agree.
    """

    train_loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    val_loss_train_mode: list[float] = field(default_factory=list)
    val_loss_eval_mode: list[float] = field(default_factory=list)


def _train_flag(mode: Any) -> bool:
    """``mode`` as a train flag: True / "train" -> True, False / "eval" -> False."""
    if isinstance(mode, bool):
        return mode
    if mode in ("train", "eval"):
        return mode == "train"
    raise ValueError(f"expected mode 'train' or 'eval' (or a bool), got {mode!r}")


@contextmanager
def evaluating(model: nn.Module, mode: bool | str = False) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode (train mode if ``mode``) in the block, then undo it.

    ``mode`` is a train flag as in ``model.train(mode)``; "train" and "eval" are
    accepted too. In train mode BatchNorm layers normalize with each batch's own
    statistics and update their running statistics; every buffer is saved on
    entry and restored on exit (also after an exception), with every submodule's
    train/eval flag, so an evaluation never changes the model. Gradients are not
    disabled: wrap the block in ``torch.no_grad()`` where they are not needed.

    Example:
        >>> norm = torch.nn.BatchNorm1d(3)
        >>> with evaluating(norm, True):
        ...     _ = norm(torch.randn(4, 3) + 5)
        >>> norm.running_mean.tolist(), norm.training
        ([0.0, 0.0, 0.0], True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    train_mode = _train_flag(mode)
    flags = {m: m.training for m in model.modules()}
    saved = {
        m: {k: None if b is None else b.detach().clone() for k, b in m._buffers.items()}
        for m in model.modules()
    }
    model.train(train_mode)
    try:
        yield model
    finally:
        _restore_buffers(saved)
        for m, flag in flags.items():
            m.training = flag


def _restore_buffers(saved: dict[nn.Module, dict[str, Any]]) -> None:
    """Put each module's buffers back: in place where the shape still fits."""
    with torch.no_grad():
        for m, bufs in saved.items():
            for k in [k for k in m._buffers if k not in bufs]:
                del m._buffers[k]  # a buffer that the block added
            for k, keep in bufs.items():
                live = m._buffers.get(k)
                fits = live is not None and keep is not None
                if fits and live.shape == keep.shape and live.dtype == keep.dtype:
                    live.copy_(keep)
                else:
                    m._buffers[k] = keep


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Sequence[Batch],
    loss_fn: LossFn = lm_loss,
    mode: bool | str = "eval",
) -> float:
    """Mean loss over fixed ``batches`` in eval or train mode; model unchanged.

    In "train" mode BatchNorm layers use the batch statistics; see ``evaluating``.
    """
    if len(batches) == 0:
        raise ValueError("expected at least one batch to evaluate on, got none")
    with evaluating(model, mode):
        return sum(float(loss_fn(model, b)) for b in batches) / len(batches)


def _check_train_args(
    steps: int,
    lr: float,
    eval_every: int,
    warmup_steps: int,
    grad_clip: float | None,
    weight_decay: float,
) -> None:
    for name, v in (
        ("steps", steps),
        ("eval_every", eval_every),
        ("warmup_steps", warmup_steps),
    ):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"expected {name} to be an int, got {v!r}")
    for name, v in (
        ("lr", lr),
        ("weight_decay", weight_decay),
        ("grad_clip", grad_clip),
    ):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise TypeError(f"expected {name} to be a float, got {v!r}")
    if steps < 1:
        raise ValueError(f"expected steps >= 1, got steps={steps}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"expected a finite lr > 0, got lr={lr}")
    if eval_every < 0 or warmup_steps < 0:
        raise ValueError(
            "expected eval_every >= 0 and warmup_steps >= 0, "
            f"got eval_every={eval_every}, warmup_steps={warmup_steps}"
        )
    if grad_clip is not None and not (math.isfinite(grad_clip) and grad_clip > 0):
        raise ValueError(
            f"expected grad_clip None or a finite value > 0, got {grad_clip}"
        )
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"expected a finite weight_decay >= 0, got {weight_decay}")


def train(
    model: nn.Module,
    batch_fn: Callable[[], Batch],
    loss_fn: LossFn = lm_loss,
    *,
    steps: int,
    lr: float = 3e-3,
    val_batches: Sequence[Batch] = (),
    eval_every: int = 0,
    warmup_steps: int = 0,
    grad_clip: float | None = None,
    weight_decay: float = 0.0,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
) -> History:
    """Train ``model`` with AdamW for ``steps`` steps on ``batch_fn()`` batches.

    The learning rate ramps linearly over ``warmup_steps`` and is constant after.
    Seeding is the caller's: pass a ``batch_fn`` that draws from its own
    ``torch.Generator`` and build the model after ``seed_everything``. A
    non-finite loss stops training early (the history then ends at that step).
    ``extra_loss(model)``, if given, is added to the loss of every training step
    after the forward pass (e.g. ``lu.stat_penalty``, Regularized BN's penalty);
    ``History.train_loss`` and the validation losses stay the task loss alone.
    The model is left in eval mode.
    """
    _check_train_args(steps, lr, eval_every, warmup_steps, grad_clip, weight_decay)
    for name, fn in (("batch_fn", batch_fn), ("loss_fn", loss_fn)):
        if not callable(fn):
            raise TypeError(f"expected {name} to be callable, got {type(fn).__name__}")
    if extra_loss is not None and not callable(extra_loss):
        raise TypeError(
            f"expected extra_loss None or callable, got {type(extra_loss).__name__}"
        )
    if eval_every and len(val_batches) == 0:
        raise ValueError(f"expected val_batches for eval_every={eval_every}, got none")
    # foreach: one kernel per op for all parameters (the default on CUDA, not on
    # CPU); the same arithmetic as the per-parameter loop, with less overhead
    opt = torch.optim.AdamW(
        model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True
    )
    hist = History()
    for step in range(steps):
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else lr
        loss = loss_fn(model, batch_fn())
        total = loss if extra_loss is None else loss + extra_loss(model)
        opt.zero_grad(set_to_none=True)
        total.backward()
        max_norm = grad_clip if grad_clip is not None else math.inf
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        hist.train_loss.append(float(loss.detach()))
        hist.grad_norm.append(float(gnorm))
        if not math.isfinite(hist.train_loss[-1]):
            break
        opt.step()
        if (
            val_batches
            and eval_every
            and ((step + 1) % eval_every == 0 or step + 1 == steps)
        ):
            hist.eval_steps.append(step + 1)
            hist.val_loss_train_mode.append(
                evaluate(model, val_batches, loss_fn, mode="train")
            )
            hist.val_loss_eval_mode.append(
                evaluate(model, val_batches, loss_fn, mode="eval")
            )
    model.eval()
    return hist
