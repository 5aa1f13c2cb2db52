"""Probes of batch statistics: how much they fluctuate, and how far training drifts from inference.

Two measures from the literature on why BatchNorm struggles in Transformers:

* PowerNorm's fluctuation (Shen et al., 2020): the distance between a batch's
  statistics and reference (running or population) statistics,
  (1/C)·||mu_B - mu|| and (1/C)·||sigma_B^2 - sigma^2||.
* The Training-Inference Discrepancy, TID (Wang, Wu & Huang, 2022), per BN layer:
  mean-TID = mean_c |mu_run - mu_B| / sigma_B and std-TID = mean_c |sigma_run / sigma_B - 1|,
  i.e. how different the statistics used in training (the batch's) are from the
  ones used at inference (the running averages), in units of the batch's std.

``TIDRecorder`` attaches to every layer with ``running_mean``/``running_var``
buffers (``nn.BatchNorm*``, ``TokenBatchNorm``, ``MaskedBatchNorm``, ...) and
records both TIDs at every training step. ``train_char_lm`` is the char-level LM
experiment that chapters 3 and 5 share.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn

from .data import CharCorpus
from .models import TinyTransformer, TransformerConfig
from .norms import TokenBatchNorm
from .repro import seed_everything
from .train import History, train

__all__ = [
    "stat_distance",
    "powernorm_fluctuation",
    "sample_token_batches",
    "tid",
    "batch_stats_of",
    "TIDRecorder",
    "CharLMRun",
    "train_char_lm",
]


def stat_distance(
    batch_mean: torch.Tensor, batch_var: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
) -> tuple[float, float]:
    """PowerNorm's distance (Shen et al., 2020): ((1/C)·||mu_B - mu||, (1/C)·||var_B - var||).

    Shape: all four arguments (C,).
    """
    shapes = {tuple(t.shape) for t in (batch_mean, batch_var, mean, var)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"expected four (C,) tensors of one shape, got shapes {sorted(shapes)}")
    C = mean.numel()
    return float((batch_mean - mean).norm()) / C, float((batch_var - var).norm()) / C


def powernorm_fluctuation(
    batches: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
) -> tuple[float, float]:
    """Mean over K batches of ``stat_distance`` between each batch's statistics and (mean, var).

    Each batch's statistics are its per-channel mean and biased variance over its N tokens.

    Shape: batches (K, N, C); mean, var (C,).
    Returns: (mean distance, variance distance), averaged over the K batches.
    """
    if batches.dim() != 3 or batches.shape[1] < 2:
        raise ValueError(f"expected batches of shape (K, N, C) with N >= 2, got {tuple(batches.shape)}")
    C = batches.shape[-1]
    if mean.shape != (C,) or var.shape != (C,):
        raise ValueError(f"expected mean and var of shape ({C},), got {tuple(mean.shape)} and {tuple(var.shape)}")
    mu_b = batches.mean(dim=1)  # (K, C)
    var_b = batches.var(dim=1, unbiased=False)  # (K, C)
    d_mean = (mu_b - mean).norm(dim=-1) / C  # (K,)
    d_var = (var_b - var).norm(dim=-1) / C  # (K,)
    return float(d_mean.mean()), float(d_var.mean())


def sample_token_batches(
    features: torch.Tensor,
    n_batches: int,
    tokens_per_batch: int,
    generator: torch.Generator,
    window: Optional[int] = None,
) -> torch.Tensor:
    """Draw batches of token features from a sequence, as contiguous windows or i.i.d. tokens.

    Args:
        features: (L, C), one feature vector per position of a token stream.
        n_batches: K, the number of batches.
        tokens_per_batch: N, tokens in each batch.
        generator: the random source for the start positions.
        window: None draws N positions i.i.d. (a "shuffled" batch); an int draws
            N // window contiguous windows of ``window`` tokens (one window of N
            tokens when N <= window), the way a language model sees text.

    Shape: returns (K, N, C).
    """
    if features.dim() != 2:
        raise ValueError(f"expected features of shape (L, C), got {tuple(features.shape)}")
    if n_batches < 1 or tokens_per_batch < 1:
        raise ValueError(f"expected n_batches >= 1 and tokens_per_batch >= 1, got {n_batches}, {tokens_per_batch}")
    L = features.shape[0]
    if window is None:
        idx = torch.randint(L, (n_batches, tokens_per_batch), generator=generator)  # (K, N)
        return features[idx]
    if window < 1 or (tokens_per_batch > window and tokens_per_batch % window):
        raise ValueError(f"expected tokens_per_batch <= window or a multiple of it, got {tokens_per_batch} and window={window}")
    T = min(window, tokens_per_batch)
    if T > L:
        raise ValueError(f"expected windows of at most L={L} tokens, got {T}")
    n_windows = tokens_per_batch // T
    starts = torch.randint(L - T + 1, (n_batches, n_windows), generator=generator)  # (K, W)
    idx = starts[..., None] + torch.arange(T)  # (K, W, T)
    return features[idx.reshape(n_batches, tokens_per_batch)]  # (K, N, C)


def tid(
    batch_mean: torch.Tensor,
    batch_var: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    eps: float = 1e-5,
) -> tuple[float, float]:
    """Training-Inference Discrepancy of one BN layer (Wang, Wu & Huang, 2022).

    With sigma_B = sqrt(var_B + eps) and sigma_run = sqrt(var_run + eps):
    mean-TID = mean_c |mu_run - mu_B| / sigma_B, std-TID = mean_c |sigma_run / sigma_B - 1|.

    Shape: all four tensors (C,).
    Returns: (mean_tid, std_tid).
    """
    shapes = {tuple(t.shape) for t in (batch_mean, batch_var, running_mean, running_var)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"expected four (C,) tensors of one shape, got shapes {sorted(shapes)}")
    sigma_b = (batch_var + eps).sqrt()
    sigma_run = (running_var + eps).sqrt()
    mean_tid = ((running_mean - batch_mean).abs() / sigma_b).mean()
    std_tid = (sigma_run / sigma_b - 1).abs().mean()
    return float(mean_tid), float(std_tid)


def batch_stats_of(
    module: nn.Module, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and biased variance that ``module`` normalizes ``x`` with in training.

    Uses ``module.batch_stats(x, padding_mask)`` when the layer defines it (e.g.
    ``MaskedBatchNorm``: real tokens only); takes channels last for the book's
    (B, T, C) norms (``TokenBatchNorm`` and other layers); channels second for a
    plain ``nn.BatchNorm1d/2d/3d``.
    """
    if hasattr(module, "batch_stats"):
        mean, var = module.batch_stats(x, padding_mask)[:2]
        return mean, var
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, TokenBatchNorm):
        x = x.transpose(0, 1).reshape(x.shape[1], -1).T  # channels second -> (N, C)
    else:
        x = x.reshape(-1, x.shape[-1])  # (B, T, C) -> (N, C)
    return x.mean(dim=0), x.var(dim=0, unbiased=False)


def _has_running_stats(module: nn.Module) -> bool:
    return all(isinstance(getattr(module, k, None), torch.Tensor) for k in ("running_mean", "running_var"))


class TIDRecorder:
    """Record mean-TID and std-TID of every BN-like layer at every training step.

    A forward pre-hook on every module with ``running_mean``/``running_var``
    buffers compares the batch statistics of its input with the running statistics
    *before* this step updates them (the ones inference would use now). Only
    forward passes in training mode with gradients enabled are recorded, so the
    no-grad validation passes of ``lu.evaluate`` are skipped.

    Example:
        >>> model = TinyTransformer(TransformerConfig(norm="batch"))
        >>> with TIDRecorder(model) as rec:
        ...     _ = model(torch.randint(64, (4, 16)))
        >>> sorted(rec.mean_tid)[:2], len(rec.mean_tid["blocks.0.norm1"])
        (['blocks.0.norm1', 'blocks.0.norm2'], 1)
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = {name: m for name, m in model.named_modules() if _has_running_stats(m)}
        if not self.layers:
            raise ValueError("expected a model with at least one layer with running_mean/running_var buffers, got none")
        self.mean_tid: dict[str, list[float]] = {name: [] for name in self.layers}
        self.std_tid: dict[str, list[float]] = {name: [] for name in self.layers}
        self._handles: list = []

    def _hook(self, name: str) -> Callable[[nn.Module, tuple, dict], None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if not (module.training and torch.is_grad_enabled()):
                return
            x = args[0] if args else kwargs.get("x", kwargs.get("input"))  # book norms: x; nn.BatchNorm*: input
            mask = args[1] if len(args) > 1 else kwargs.get("padding_mask")
            with torch.no_grad():
                mean, var = batch_stats_of(module, x.detach(), mask)
                eps = float(getattr(module, "eps", 1e-5))
                m, s = tid(mean, var, module.running_mean, module.running_var, eps)
            self.mean_tid[name].append(m)
            self.std_tid[name].append(s)

        return hook

    def attach(self) -> "TIDRecorder":
        """Register the hooks (``with TIDRecorder(model) as rec:`` does this for you)."""
        if not self._handles:
            self._handles = [
                m.register_forward_pre_hook(self._hook(name), with_kwargs=True) for name, m in self.layers.items()
            ]
        return self

    def detach(self) -> None:
        """Remove the hooks; what was recorded stays."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "TIDRecorder":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def as_tensor(self, which: str = "mean") -> torch.Tensor:
        """The recorded TID as a (n_layers, n_steps) tensor; ``which`` is "mean" or "std"."""
        if which not in ("mean", "std"):
            raise ValueError(f"expected which='mean' or 'std', got {which!r}")
        series = self.mean_tid if which == "mean" else self.std_tid
        return torch.tensor([series[name] for name in self.layers])


@dataclass
class CharLMRun:
    """What ``train_char_lm`` returns: the trained model, its history, and the TID probe (or None)."""

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
    lr: float = 3e-3,
    warmup_steps: int = 0,
    grad_clip: Optional[float] = None,
    n_val_batches: int = 32,
    record_tid: bool = False,
    extra_loss: Optional[Callable[[nn.Module], torch.Tensor]] = None,
) -> CharLMRun:
    """Train a tiny char-level LM on ``corpus`` whose normalization batch is (batch_size, block_size).

    Every step draws ``batch_size`` windows of ``block_size`` characters, so a BN
    layer normalizes over batch_size * block_size tokens. The model and the
    training windows depend only on ``seed`` (not on ``norm``), so runs with
    different norms see the same data from the same initial weights. At the end
    the validation loss is measured on ``n_val_batches`` fixed validation batches of
    the same shape, in train mode and in eval mode (``history.val_loss_*_mode``).

    ``extra_loss`` is passed to ``lu.train`` (e.g. ``lu.stat_penalty`` for norm="rbn").

    Returns: ``CharLMRun(model, history, tid)``; ``tid`` is a ``TIDRecorder`` when
    ``record_tid`` is True (the model must then have BN-like layers), else None.
    """
    if batch_size < 1 or block_size < 2 or n_val_batches < 1:
        raise ValueError(
            f"expected batch_size >= 1, block_size >= 2, n_val_batches >= 1, got {batch_size}, {block_size}, {n_val_batches}"
        )
    g_val = torch.Generator().manual_seed(seed + 7919)  # validation windows: fixed per seed
    val = [corpus.batch("val", batch_size, block_size, g_val) for _ in range(n_val_batches)]
    g = seed_everything(seed)
    cfg = TransformerConfig(
        vocab_size=corpus.vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
        n_embd=n_embd, norm=norm, norm_position=norm_position,
    )
    model = TinyTransformer(cfg)
    probe = TIDRecorder(model).attach() if record_tid else None
    try:
        hist = train(
            model, lambda: corpus.batch("train", batch_size, block_size, g), steps=steps, lr=lr,
            val_batches=val, eval_every=steps, warmup_steps=warmup_steps, grad_clip=grad_clip,
            extra_loss=extra_loss,
        )
    finally:
        if probe is not None:
            probe.detach()
    return CharLMRun(model, hist, probe)
