"""Probes of batch statistics: how they fluctuate, how training drifts from inference.

Two measures from the literature on why BatchNorm struggles in Transformers:

* PowerNorm's fluctuation (Shen et al., 2020): the distance between a batch's
  statistics and reference (running or population) statistics,
  (1/C)·||mu_B - mu|| and (1/C)·||sigma_B^2 - sigma^2||.
* The Training-Inference Discrepancy, TID (Wang, Wu & Huang, 2022), per BN layer:
  mean-TID = mean_c |mu_run - mu_B| / sigma_B and
  std-TID = mean_c |sigma_run / sigma_B - 1|,
  i.e. how different the statistics used in training (the batch's) are from the
  ones used at inference (the running averages), in units of the batch's std.

``TIDRecorder`` attaches to every layer with ``running_mean``/``running_var``
buffers (``nn.BatchNorm*``, ``TokenBatchNorm``, ``MaskedBatchNorm``, ...) and
records both TIDs at every training step; ``tid_null`` is the value i.i.d. Gaussian
tokens would give (the control every TID needs). The char-level LM experiments live in
``charlm_experiment.py``.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn as nn

from .norms import _REDUCED, TORCH_BATCH_NORMS, TokenBatchNorm

__all__ = [
    "stat_distance",
    "powernorm_fluctuation",
    "sample_token_batches",
    "tid",
    "batch_stats_of",
    "TIDRecorder",
    "tid_null",
    "iid_tid",
]


def stat_distance(
    batch_mean: torch.Tensor,
    batch_var: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
) -> tuple[float, float]:
    """PowerNorm's distance (Shen et al., 2020).

    Returns ((1/C)·||mu_B - mu||, (1/C)·||var_B - var||).

    Shape: all four arguments (C,).
    """
    shapes = {tuple(t.shape) for t in (batch_mean, batch_var, mean, var)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(
            f"expected four (C,) tensors of one shape, got shapes {sorted(shapes)}"
        )
    C = mean.numel()
    return float((batch_mean - mean).norm()) / C, float((batch_var - var).norm()) / C


def powernorm_fluctuation(
    batches: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
) -> tuple[float, float]:
    """Mean over K batches of ``stat_distance`` from batch statistics to (mean, var).

    A batch's statistics are its per-channel mean and biased variance over its N tokens.

    Shape: batches (K, N, C); mean, var (C,).
    Returns: (mean distance, variance distance), averaged over the K batches.
    """
    if batches.dim() != 3 or batches.shape[1] < 2:
        raise ValueError(
            "expected batches of shape (K, N, C) with N >= 2, "
            f"got {tuple(batches.shape)}"
        )
    C = batches.shape[-1]
    if mean.shape != (C,) or var.shape != (C,):
        raise ValueError(
            f"expected mean and var of shape ({C},), "
            f"got {tuple(mean.shape)} and {tuple(var.shape)}"
        )
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
    """Draw batches of token features: contiguous windows, or i.i.d. tokens.

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
        raise ValueError(
            f"expected features of shape (L, C), got {tuple(features.shape)}"
        )
    if n_batches < 1 or tokens_per_batch < 1:
        raise ValueError(
            "expected n_batches >= 1 and tokens_per_batch >= 1, "
            f"got {n_batches}, {tokens_per_batch}"
        )
    L = features.shape[0]
    if window is None:
        idx = torch.randint(
            L, (n_batches, tokens_per_batch), generator=generator
        )  # (K, N)
        return features[idx]
    if window < 1 or (tokens_per_batch > window and tokens_per_batch % window):
        raise ValueError(
            "expected tokens_per_batch <= window or a multiple of it, "
            f"got {tokens_per_batch} and window={window}"
        )
    T = min(window, tokens_per_batch)
    if T > L:
        raise ValueError(f"expected windows of at most L={L} tokens, got {T}")
    n_windows = tokens_per_batch // T
    starts = torch.randint(
        L - T + 1, (n_batches, n_windows), generator=generator
    )  # (K, W)
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
    mean-TID = mean_c |mu_run - mu_B| / sigma_B,
    std-TID = mean_c |sigma_run / sigma_B - 1|.

    Variance convention: var_B is the biased variance a BN layer normalizes with in
    training, var_run the running variance it uses at inference (PyTorch keeps an
    unbiased one), so std-TID compares the two numbers the layer really uses. The
    paper's code reads a biased running variance after the update instead, which gives
    smaller std-TID for small batches (0.26 instead of 0.30 for i.i.d. batches of 8).
    Compare std-TID only with a null (``iid_tid``) measured the same way.

    Shape: batch_mean, batch_var (C,) or (G, C) for G normalization groups (ghost
    batches, positions), averaged over groups too; running_mean, running_var (C,).
    Returns: (mean_tid, std_tid).
    """
    C = running_mean.shape[-1] if running_mean.dim() == 1 else -1
    ok = (
        running_mean.shape == running_var.shape == (C,)
        and batch_mean.shape == batch_var.shape
        and batch_mean.dim() in (1, 2)
        and batch_mean.shape[-1] == C
    )
    if not ok:
        shapes = [
            tuple(t.shape) for t in (batch_mean, batch_var, running_mean, running_var)
        ]
        raise ValueError(
            f"expected four (C,) tensors, or (G, C) batch statistics and (C,) running "
            f"statistics, got shapes {shapes}"
        )
    sigma_b = (batch_var + eps).sqrt()
    sigma_run = (running_var + eps).sqrt()
    mean_tid = ((running_mean - batch_mean).abs() / sigma_b).mean()
    std_tid = (sigma_run / sigma_b - 1).abs().mean()
    return float(mean_tid), float(std_tid)


def tid_null(group: int, n_tokens: int, momentum: float = 0.1) -> float:
    """Mean-TID of i.i.d. Gaussian tokens: what TID is from sampling noise alone.

    A layer normalizes groups of ``group`` tokens (the whole batch, a ghost batch, a
    position) and updates its running mean once per step with momentum m from all
    ``n_tokens`` tokens of the step. For i.i.d. N(mu, sigma^2) tokens the running mean
    (an exponential average of past steps, independent of this step) has variance
    m / (2 - m) * sigma^2 / n_tokens in the steady state, the group mean
    sigma^2 / group, and the biased group std is independent of both, so

        mean-TID = sqrt(2 / pi) * sqrt(1 / group + m / ((2 - m) n_tokens))
                   * E[sigma / sigma_B],
        E[sigma / sigma_B] = sqrt(group / 2) * Gamma((group - 2) / 2)
                             / Gamma((group - 1) / 2).

    Needs group >= 3 (E[1 / sigma_B] is infinite for 2 tokens); eps is neglected.
    """
    if group < 3 or n_tokens < group or not 0 < momentum <= 1:
        raise ValueError(
            "expected 3 <= group <= n_tokens and 0 < momentum <= 1, "
            f"got group={group}, "
            f"n_tokens={n_tokens}, momentum={momentum}"
        )
    spread = math.sqrt(1 / group + momentum / ((2 - momentum) * n_tokens))
    log_ratio = math.lgamma((group - 2) / 2) - math.lgamma((group - 1) / 2)
    inv_sigma = math.sqrt(group / 2) * math.exp(log_ratio)  # E[sigma / sigma_B]
    return math.sqrt(2 / math.pi) * spread * inv_sigma


def iid_tid(
    layer: nn.Module,
    shape: tuple[int, int],
    steps: int,
    generator: torch.Generator,
    burn_in: int = 50,
) -> tuple[float, float]:
    """Mean- and std-TID of ``layer`` fed i.i.d. N(0, 1) batches of ``shape`` = (B, T).

    The simulated null for ``lu.TIDRecorder``: the same layer, momentum and batch shape,
    with tokens that have no correlation and no heavy tails. Averages over ``steps``
    steps after ``burn_in`` steps that let the running statistics forget their initial
    values. ``layer`` is trained in place (pass a fresh one).

    Returns: (mean_tid, std_tid).
    """
    if steps < 1 or burn_in < 0:
        raise ValueError(
            f"expected steps >= 1 and burn_in >= 0, got {steps}, {burn_in}"
        )
    C = int(layer.num_features)
    model = nn.Sequential(layer).train()
    with TIDRecorder(model) as rec:
        for _ in range(burn_in + steps):
            x = torch.randn(*shape, C, generator=generator)  # (B, T, C)
            with torch.enable_grad():
                model(x)
    m, s = rec.as_tensor("mean")[0, burn_in:], rec.as_tensor("std")[0, burn_in:]
    return float(m.mean()), float(s.mean())


def batch_stats_of(
    module: nn.Module, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and biased variance ``module`` normalizes ``x`` with.

    Uses ``module.batch_stats(x, padding_mask)`` when the layer defines it (e.g.
    ``MaskedBatchNorm``: real tokens only; a layer with G normalization groups, such as
    ``GhostBatchNorm``, returns (G, C) statistics); takes channels last for the book's
    (B, T, C) norms (``TokenBatchNorm`` and other layers); channels second for a
    plain ``nn.BatchNorm1d/2d/3d``. Float16/bfloat16 ``x`` into a layer with float32
    running statistics is measured in float32, as the layer computes it.
    """
    rm = getattr(module, "running_mean", None)
    if (
        isinstance(rm, torch.Tensor)
        and x.dtype in _REDUCED
        and rm.dtype == torch.float32
    ):
        x = x.float()  # mixed precision: the layer's statistics are float32
    if hasattr(module, "batch_stats"):
        mean, var = module.batch_stats(x, padding_mask)[:2]
        return mean, var
    if isinstance(module, TORCH_BATCH_NORMS) and not isinstance(module, TokenBatchNorm):
        x = x.transpose(0, 1).reshape(x.shape[1], -1).T  # channels second -> (N, C)
    else:
        x = x.reshape(-1, x.shape[-1])  # (B, T, C) -> (N, C)
    return x.mean(dim=0), x.var(dim=0, unbiased=False)


def _has_running_stats(module: nn.Module) -> bool:
    return all(
        isinstance(getattr(module, k, None), torch.Tensor)
        for k in ("running_mean", "running_var")
    )


class TIDRecorder:
    """Record mean-TID and std-TID of every BN-like layer at every training step.

    A forward pre-hook on every module with ``running_mean``/``running_var``
    buffers compares the batch statistics of its input with the running statistics
    *before* this step updates them (the ones inference would use now). Only
    forward passes in training mode with gradients enabled are recorded, so the
    no-grad validation passes of ``lu.evaluate`` are skipped.

    Example:
        >>> model = nn.Sequential(TokenBatchNorm(4), TokenBatchNorm(4))
        >>> with TIDRecorder(model) as rec:
        ...     _ = model(torch.randn(2, 8, 4))  # (B, T, C)
        >>> sorted(rec.mean_tid), len(rec.mean_tid["0"])
        (['0', '1'], 1)
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = {
            name: m for name, m in model.named_modules() if _has_running_stats(m)
        }
        if not self.layers:
            raise ValueError(
                "expected a model with at least one layer with "
                "running_mean/running_var buffers, got none"
            )
        self.mean_tid: dict[str, list[float]] = {name: [] for name in self.layers}
        self.std_tid: dict[str, list[float]] = {name: [] for name in self.layers}
        self._handles: list = []

    def _hook(self, name: str) -> Callable[[nn.Module, tuple, dict], None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if not (module.training and torch.is_grad_enabled()):
                return
            x = (
                args[0] if args else kwargs.get("x", kwargs.get("input"))
            )  # book norms: x; nn.BatchNorm*: input
            mask = args[1] if len(args) > 1 else kwargs.get("padding_mask")
            with torch.no_grad():
                mean, var = batch_stats_of(module, x.detach(), mask)
                eps = float(getattr(module, "eps", 1e-5))
                m, s = tid(mean, var, module.running_mean, module.running_var, eps)
            self.mean_tid[name].append(m)
            self.std_tid[name].append(s)

        return hook

    def attach(self) -> "TIDRecorder":
        """Register the hooks (``with TIDRecorder(model) as rec:`` does this)."""
        if not self._handles:
            self._handles = [
                m.register_forward_pre_hook(self._hook(name), with_kwargs=True)
                for name, m in self.layers.items()
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
        """The recorded TID, (n_layers, n_steps); ``which``: "mean" or "std"."""
        if which not in ("mean", "std"):
            raise ValueError(f"expected which='mean' or 'std', got {which!r}")
        series = self.mean_tid if which == "mean" else self.std_tid
        return torch.tensor([series[name] for name in self.layers])
