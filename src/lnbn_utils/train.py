"""A minimal, seeded training loop that records what the chapters plot."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["History", "train", "evaluate", "lm_loss", "classifier_loss"]

Batch = Any  # whatever batch_fn returns and loss_fn accepts
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy (nats per token) for a batch (inputs (B, T), targets (B, T))."""
    x, y = batch
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def classifier_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
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


@torch.no_grad()
def evaluate(model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn = lm_loss, mode: str = "eval") -> float:
    """Mean loss over fixed ``batches`` in "eval" or "train" mode; leaves the model unchanged.

    In "train" mode BatchNorm layers use the batch statistics; their running
    statistics are saved and restored, so evaluating never changes the model.
    """
    if mode not in ("train", "eval"):
        raise ValueError(f"expected mode 'train' or 'eval', got {mode!r}")
    was_training = model.training
    buffers = copy.deepcopy(list(model.buffers()))
    model.train(mode == "train")
    loss = sum(float(loss_fn(model, b)) for b in batches) / len(batches)
    for saved, live in zip(buffers, model.buffers()):
        live.copy_(saved)
    model.train(was_training)
    return loss


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
    if steps < 1 or lr <= 0:
        raise ValueError(f"expected steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
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
        if val_batches and eval_every and ((step + 1) % eval_every == 0 or step + 1 == steps):
            hist.eval_steps.append(step + 1)
            hist.val_loss_train_mode.append(evaluate(model, val_batches, loss_fn, mode="train"))
            hist.val_loss_eval_mode.append(evaluate(model, val_batches, loss_fn, mode="eval"))
    model.eval()
    return hist
