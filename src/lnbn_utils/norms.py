"""Normalization layers for (B, T, C) activations, all with one signature.

Every module here is called as ``norm(x, padding_mask=None)`` where ``x`` has
shape (B, T, C) (batch, time, channels) and ``padding_mask`` is a bool (B, T)
tensor in which **True marks padding** (PyTorch's ``key_padding_mask``
convention). Which axes each layer averages over is the whole story of the book:

* LayerNorm / RMSNorm: over C, separately for every token.  The mask is ignored
  because nothing is shared across tokens.
* TokenBatchNorm: over all B*T tokens, per channel, pads included (the naive
  baseline).
* MaskedBatchNorm: over the real (non-padding) tokens only, per channel.
* RegularizedBatchNorm, BatchRenorm: as MaskedBatchNorm, repaired for Transformers
  (a penalty on the train/inference gap; running statistics in the forward pass).
* PowerNorm: per channel over the real tokens, without centring, and it normalizes
  with running statistics in training too.
* DyT: no statistics at all, an elementwise tanh.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn

__all__ = [
    "LayerNorm",
    "RMSNorm",
    "TokenBatchNorm",
    "MaskedBatchNorm",
    "NoNorm",
    "make_norm",
    "NORM_KINDS",
    "register_norm",
    "check_norm_input",
]


def check_norm_input(
    x: torch.Tensor, padding_mask: Optional[torch.Tensor], num_features: int
) -> None:
    """Raise ``ValueError`` unless ``x`` is (B, T, num_features) and the mask is bool (B, T)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected x to be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"expected x of shape (B, T, C), got shape {tuple(x.shape)}")
    if x.shape[-1] != num_features:
        raise ValueError(
            f"expected x with C={num_features} channels in the last dim, "
            f"got shape {tuple(x.shape)}"
        )
    if padding_mask is None:
        return
    if not isinstance(padding_mask, torch.Tensor) or padding_mask.dtype != torch.bool:
        got = padding_mask.dtype if isinstance(padding_mask, torch.Tensor) else type(padding_mask).__name__
        raise ValueError(f"expected padding_mask of dtype torch.bool (True = pad), got {got}")
    if tuple(padding_mask.shape) != tuple(x.shape[:2]):
        raise ValueError(
            f"expected padding_mask of shape (B, T) = {tuple(x.shape[:2])}, "
            f"got shape {tuple(padding_mask.shape)}"
        )


def _check_enough_tokens(n_real: int) -> None:
    if n_real < 2:
        raise ValueError(
            "expected at least 2 real (non-padding) tokens per channel to compute "
            f"batch statistics in training mode, got {n_real}"
        )


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over C that accepts (and ignores) a padding mask.

    y = (x - mean_C(x)) / sqrt(var_C(x) + eps) * weight + bias, with the biased
    variance, per token (Ba et al., 2016).

    Shape: x (B, T, C) -> (B, T, C).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps)
        self.num_features = num_features

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_norm_input(x, padding_mask, self.num_features)
        return super().forward(x)


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich, 2019): y = x / sqrt(mean_C(x^2) + eps) * weight.

    No mean subtraction and no bias. Numerically the same as ``nn.RMSNorm`` with the
    same ``eps``; written out here so the arithmetic is visible.

    Shape: x (B, T, C) -> (B, T, C).
    """

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_norm_input(x, padding_mask, self.num_features)
        rms_inv = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (B, T, 1)
        return x * rms_inv * self.weight

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm over all B*T tokens per channel -- the naive baseline.

    Exactly ``nn.BatchNorm1d`` applied to the (B, C, T) transpose (BatchNorm1d
    wants channels second), running statistics included (Ioffe & Szegedy, 2015).
    It is computed on the (B*T, C) matrix instead, the same statistics over the same
    tokens: on the CPU the transposed view falls onto a strided kernel several times
    slower (measured in chapter 4).
    ``padding_mask`` is validated but otherwise **ignored**: pad tokens enter the
    batch statistics, which is the problem chapter 2 measures.

    Shape: x (B, T, C) -> (B, T, C).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:  # type: ignore[override]
        check_norm_input(x, padding_mask, self.num_features)
        if self.training:
            _check_enough_tokens(x.shape[0] * x.shape[1])
        # nn.BatchNorm1d wants channels second. (B, T, C) -> (B*T, C) puts them there, with every
        # token a sample, and keeps memory contiguous (the (B, C, T) transpose would not).
        B, T, C = x.shape
        return super().forward(x.reshape(B * T, C)).view(B, T, C)


class MaskedBatchNorm(nn.Module):
    """BatchNorm whose statistics come from the real (non-padding) tokens only.

    In training mode the per-channel mean and biased variance are taken over the
    N real tokens; the running statistics are updated as in ``nn.BatchNorm1d``
    (running_var uses the unbiased variance, N / (N - 1) times the biased one).
    Eval mode uses the running statistics. Pads are normalized with the same
    statistics, but their values never enter them, so outputs at real tokens do not
    depend on how much padding a batch has or on what the pads hold.

    Shape: x (B, T, C), padding_mask (B, T) bool or None -> (B, T, C).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_norm_input(x, padding_mask, self.num_features)
        if not self.training:
            mean, var = self.running_mean, self.running_var
        else:
            mean, var, n = self.batch_stats(x, padding_mask)
            with torch.no_grad():
                unbiased = var * n / (n - 1)
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(unbiased.detach(), self.momentum)
                self.num_batches_tracked += 1
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias

    @staticmethod
    def batch_stats(
        x: torch.Tensor, padding_mask: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Per-channel mean, biased variance and count over the real tokens of ``x``."""
        if padding_mask is None:
            padding_mask = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        real = (~padding_mask).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        n = int((~padding_mask).sum())
        _check_enough_tokens(n)
        x0 = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)  # pads -> 0 (even inf/nan pads)
        mean = x0.sum(dim=(0, 1)) / n  # (C,)
        var = ((x0 - mean) * real).pow(2).sum(dim=(0, 1)) / n  # (C,) biased
        return mean, var, n

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class NoNorm(nn.Module):
    """The identity, with the norm signature: the 'no normalization' baseline."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_norm_input(x, padding_mask, self.num_features)
        return x


NORM_KINDS: dict[str, Callable[..., nn.Module]] = {
    "layer": LayerNorm,
    "batch": TokenBatchNorm,
    "masked_batch": MaskedBatchNorm,
    "rms": RMSNorm,
    "none": NoNorm,
}


def register_norm(kind: str, factory: Callable[..., nn.Module]) -> None:
    """Add a norm kind to ``make_norm`` (``factory(num_features, **kwargs)``)."""
    NORM_KINDS[kind] = factory


def make_norm(kind: str, num_features: int, **kwargs) -> nn.Module:
    """Build a norm layer by name: one of ``NORM_KINDS`` ("layer", "batch", ...).

    Example:
        >>> norm = make_norm("masked_batch", 16)
        >>> norm(torch.randn(2, 5, 16), padding_mask=torch.zeros(2, 5, dtype=torch.bool)).shape
        torch.Size([2, 5, 16])
    """
    if kind not in NORM_KINDS:
        raise ValueError(f"unknown norm kind {kind!r}; expected one of {sorted(NORM_KINDS)}")
    if not isinstance(num_features, int) or num_features < 1:
        raise ValueError(f"expected num_features to be a positive int, got {num_features!r}")
    return NORM_KINDS[kind](num_features, **kwargs)
