"""Normalization layers for (B, T, C) activations, all with one signature.

Every module here is called as ``norm(x, padding_mask=None)`` where ``x`` has
shape (B, T, C) (batch, time, channels) and ``padding_mask`` is a bool (B, T)
tensor in which **True marks padding** (PyTorch's ``key_padding_mask``
convention). Which axes each layer averages over is the whole story of the book:

* LayerNorm / RMSNorm: over C, separately for every token.  The mask is ignored
  because no statistic is shared across tokens (pads must hold finite values for
  the weight's gradient to ignore them: 0 * inf is NaN).
* TokenBatchNorm: over all B*T tokens, per channel, pads included (the naive
  baseline).
* MaskedBatchNorm: over the real (non-padding) tokens only, per channel.
* RegularizedBatchNorm, BatchRenorm: as MaskedBatchNorm, repaired for Transformers
  (a penalty on the train/inference gap; running statistics in the forward pass).
* GhostBatchNorm, PositionBatchNorm: BN over groups of tokens (ghost batches; one
  position over the batch), the controls of chapters 3 and 5.
* PowerNorm: per channel over the real tokens, without centring, and it normalizes
  with running statistics in training too.
* DyT: no statistics at all, an elementwise tanh.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._args import check_int, check_real
from .masking import check_padding_mask, real_token_weights

__all__ = [
    "LayerNorm",
    "RMSNorm",
    "TokenBatchNorm",
    "MaskedBatchNorm",
    "GhostBatchNorm",
    "PositionBatchNorm",
    "NoNorm",
    "make_norm",
    "NORM_KINDS",
    "register_norm",
    "BatchStatsNorm",
    "BATCHNORM_CLASSES",  # noqa: F822  (built by __getattr__ below)
]

# Dtype policy, the one nn.LayerNorm and nn.BatchNorm1d follow on the CPU: x must be a
# floating-point tensor of the norm's parameter dtype, or float16/bfloat16 when the
# parameters are float32 (mixed precision: statistics in float32, the output in x's
# dtype, the running buffers stay float32). Anything else (integer x, float64 x into a
# float32 norm, float32 x into a float64 norm) is a TypeError that names both dtypes.
# Every kind ``make_norm`` builds follows it (tests/test_norms.py loops NORM_KINDS):
# call ``check_norm_input(x, mask, C, self.weight.dtype)``, compute on
# ``x.to(self.weight.dtype)`` and return ``y.to(x.dtype)``.
_REDUCED = (torch.float16, torch.bfloat16)

# PyTorch's public BatchNorm classes, named instead of the private
# ``nn.modules.batchnorm._BatchNorm`` (``TokenBatchNorm`` is an ``nn.BatchNorm1d``).
TORCH_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def check_norm_input(
    x: torch.Tensor,
    padding_mask: Optional[torch.Tensor],
    num_features: int,
    dtype: Optional[torch.dtype] = None,
) -> None:
    """Refuse what a norm cannot compute on, from metadata only (no pass over the data).

    ``x`` must be a floating-point (B, T, num_features) tensor, of ``dtype`` (the
    norm's parameter dtype, when given) or float16/bfloat16 with float32 parameters;
    ``padding_mask`` None or a bool (B, T) tensor. Raises ``TypeError`` for a wrong
    type or dtype and ``ValueError`` for a wrong shape.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected x to be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"expected x of shape (B, T, C), got shape {tuple(x.shape)}")
    if x.shape[-1] != num_features:
        raise ValueError(
            f"expected x with C={num_features} channels in the last dim, "
            f"got shape {tuple(x.shape)}"
        )
    if not x.dtype.is_floating_point:
        raise TypeError(f"expected a floating-point x, got dtype {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        if not (x.dtype in _REDUCED and dtype == torch.float32):
            raise TypeError(
                f"expected x of dtype {dtype} (the norm's parameters), or float16/"
                f"bfloat16 with float32 parameters, got {x.dtype}; convert the norm "
                f"with .to({x.dtype}) or the input with .to({dtype})"
            )
    if padding_mask is None:
        return
    check_padding_mask(padding_mask)
    if tuple(padding_mask.shape) != tuple(x.shape[:2]):
        raise ValueError(
            f"expected padding_mask of shape (B, T) = {tuple(x.shape[:2])}, "
            f"got shape {tuple(padding_mask.shape)}"
        )
    if padding_mask.device != x.device:
        raise ValueError(
            f"expected padding_mask on x's device {x.device}, got {padding_mask.device}"
        )


def _check_num_features(num_features: int) -> None:
    check_int("num_features", num_features, least=1)


def _check_eps(eps: float) -> None:
    check_real("eps", eps, low=0.0)  # 0 allowed, as in PyTorch


def _check_momentum(momentum: Optional[float]) -> None:
    if momentum is None:  # cumulative average, as in nn.BatchNorm1d
        return
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)):
        raise TypeError(f"expected momentum to be a float or None, got {momentum!r}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"expected 0 <= momentum <= 1 (or None), got {momentum!r}")


def _check_enough_tokens(n: int | torch.Tensor) -> None:
    """At least 2 real tokens; on an accelerator checked without a synchronization."""
    msg = (
        "expected at least 2 real (non-padding) tokens per channel to compute "
        "batch statistics in training mode, got {}"
    )
    if isinstance(n, torch.Tensor) and n.device.type != "cpu":
        torch._assert_async(n >= 2, msg.format("fewer"))
    elif int(n) < 2:
        raise ValueError(msg.format(int(n)))


@runtime_checkable
class BatchStatsNorm(Protocol):
    """The BN-like contract: what probes (``lu.TIDRecorder``, folding) may rely on.

    A norm that normalizes with per-channel batch statistics in training and with
    running statistics in eval mode exposes:

    * ``batch_stats(x, padding_mask)``: the (C,) mean and biased variance it would
      normalize (B, T, C) ``x`` with in training, and the token count behind them;
    * ``running_mean``, ``running_var`` (C,): what eval mode normalizes with;
    * ``eps``: added to the variance under the square root.

    ``TokenBatchNorm``, ``MaskedBatchNorm`` and its subclasses follow it;
    ``isinstance(module, BatchStatsNorm)`` checks it without naming private
    PyTorch types.
    """

    eps: float
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def batch_stats(
        self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def momentum_factor(norm: nn.Module) -> float:
    """The running-average weight of this step: ``momentum``, or 1/steps if None.

    Call after ``num_batches_tracked`` counts this step (as ``nn.BatchNorm1d`` does).
    """
    if norm.momentum is None:  # cumulative moving average
        return 1.0 / float(norm.num_batches_tracked)
    return float(norm.momentum)


@torch.no_grad()
def update_running_stats(
    norm: nn.Module,
    mean: torch.Tensor,
    var: torch.Tensor,
    n: int | torch.Tensor,
    unbiased: bool = True,
) -> None:
    """``nn.BatchNorm1d``'s update of ``norm``'s running statistics, written once.

    ``mean``, ``var``: this batch's (C,) mean and *biased* variance over ``n``
    tokens. ``running_var`` is updated with the unbiased variance, var * n / (n - 1)
    (with ``var`` itself if ``unbiased=False``, as Regularized BN's code does);
    ``momentum=None`` gives the cumulative average over all steps so far. ``norm``
    needs ``running_mean``, ``running_var``, ``num_batches_tracked`` and
    ``momentum``. Statistics of another dtype (float16/bfloat16, or float32 from a
    mixed-precision step) are cast to the buffers' dtype.
    """
    norm.num_batches_tracked.add_(1)
    factor = momentum_factor(norm)
    rm, rv = norm.running_mean, norm.running_var
    var = var.detach() * n / (n - 1) if unbiased else var.detach()
    rm.lerp_(mean.detach().to(rm.dtype), factor)
    rv.lerp_(var.to(rv.dtype), factor)


def normalize(
    x: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """The normalize step, written once: (x - mean) / sqrt(var + eps) * weight + bias.

    Centres first, then one fused multiply-add with the per-channel scale
    weight / sqrt(var + eps): accurate even when |mean| >> std.
    Channels last: x (..., C); mean, var, weight, bias (C,).
    """
    return torch.addcmul(bias, x - mean, weight * torch.rsqrt(var + eps))


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over C that accepts (and ignores) a padding mask.

    y = (x - mean_C(x)) / sqrt(var_C(x) + eps) * weight + bias, with the biased
    variance, per token (Ba et al., 2016).

    Shape: x (B, T, C) -> (B, T, C).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        _check_num_features(num_features)
        _check_eps(eps)
        super().__init__(num_features, eps=eps)
        self.num_features = num_features

    def forward(
        self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        check_norm_input(x, padding_mask, self.num_features, self.weight.dtype)
        return super().forward(x)


class _RMSNorm(torch.autograd.Function):
    """RMSNorm on (N, C) rows with a closed-form backward; saves x and 1/rms only.

    Forward: one reduction per row (the RMS, as a vector norm) and the product
    x * (1/rms) * weight. Backward: PyTorch's fused LayerNorm backward kernel, given a
    mean of 0, computes rstd * (g - mean_C(g) - x_hat * mean_C(g * x_hat)) with
    g = dy * weight and x_hat = x * rstd, and the weight's gradient sum_N(dy * x_hat);
    RMSNorm's input gradient lacks the mean_C(g) term, which is added back:
    rstd * (dy @ weight) / C per row.
    """

    @staticmethod
    def forward(ctx, x, weight, eps):  # type: ignore[override]
        C = x.shape[-1]
        rstd = torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # (N, 1): ||x||
        rstd = rstd.square_().div_(C).add_(eps).rsqrt_()  # (N, 1): 1 / rms
        ctx.save_for_backward(x, weight, rstd)
        return torch.mul(x, rstd).mul_(weight)  # (N, C)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, weight, rstd = ctx.saved_tensors
        C = x.shape[-1]
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dx, dw, _ = torch.ops.aten.native_layer_norm_backward(
            g, x, [C], torch.zeros_like(rstd), rstd, weight, None,
            [need_x, need_w, False],
        )  # fmt: skip
        if dx is not None:  # add back rstd * mean_C(dy * weight), per row
            dx.add_(torch.mv(g, weight).unsqueeze(1).mul_(rstd).div_(C))
        return dx, dw, None


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich, 2019): y = x / sqrt(mean_C(x^2) + eps) * weight.

    No mean subtraction and no bias. The same as ``nn.RMSNorm`` with the same
    ``eps`` (``F.rms_norm``; chapter 0 writes it out). Float16/bfloat16
    input to a float32 norm is computed in float32 and returned in its own dtype.

    Args:
        closed_form: False (default): ``F.rms_norm``, which on the CPU runs as
            plain ops and saves two full-size tensors for backward (the counts
            chapter 4 states). True: a custom autograd function with a
            closed-form backward that saves x and 1/rms only, as a fused kernel
            would, and runs about twice as fast on the CPU; equal to the default
            to float32 rounding.

    Shape: x (B, T, C) -> (B, T, C).
    """

    def __init__(
        self, num_features: int, eps: float = 1e-6, closed_form: bool = False
    ) -> None:
        super().__init__()
        _check_num_features(num_features)
        _check_eps(eps)
        if not isinstance(closed_form, bool):
            raise TypeError(f"expected closed_form to be a bool, got {closed_form!r}")
        self.num_features = num_features
        self.eps = eps
        self.closed_form = closed_form
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(
        self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        check_norm_input(x, padding_mask, self.num_features, self.weight.dtype)
        xf = x.to(self.weight.dtype)  # no copy unless x is float16/bfloat16
        if self.closed_form:
            B, T, C = x.shape
            y = _RMSNorm.apply(xf.reshape(B * T, C), self.weight, self.eps)
            return y.view(B, T, C).to(x.dtype)
        # x * rsqrt(mean_C(x^2) + eps) * weight, in PyTorch's kernel (plain ops on CPU)
        return F.rms_norm(xf, (self.num_features,), self.weight, self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        extra = ", closed_form=True" if self.closed_form else ""
        return f"{self.num_features}, eps={self.eps}{extra}"


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm over all B*T tokens per channel -- the naive baseline.

    Exactly ``nn.BatchNorm1d`` applied to the (B, C, T) transpose (BatchNorm1d
    wants channels second), running statistics included (Ioffe & Szegedy, 2015).
    It is computed on the (B*T, C) matrix instead, the same statistics over the same
    tokens: on the CPU the transposed view falls onto a strided kernel several times
    slower (measured in chapter 4).
    ``padding_mask`` is validated but otherwise **ignored**: pad tokens enter the
    batch statistics, which is the problem chapter 2 measures.
    ``momentum=None`` keeps a cumulative average, as in ``nn.BatchNorm1d``.

    Shape: x (B, T, C) -> (B, T, C).
    """

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1
    ) -> None:
        _check_num_features(num_features)
        _check_eps(eps)
        _check_momentum(momentum)
        super().__init__(num_features, eps=eps, momentum=momentum)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        check_norm_input(x, padding_mask, self.num_features, self.weight.dtype)
        B, T, C = x.shape
        if self.training:
            _check_enough_tokens(B * T)
        # nn.BatchNorm1d wants channels second. (B, T, C) -> (B*T, C) puts them there,
        # with every token a sample, and keeps memory contiguous (the (B, C, T)
        # transpose would not).
        return super().forward(x.reshape(B * T, C)).view(B, T, C)

    @staticmethod
    def batch_stats(
        x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-channel mean, biased variance and count over all B*T tokens, pads too."""
        return MaskedBatchNorm.batch_stats(x, None)


class _MaskedBatchNorm(torch.autograd.Function):
    """Training-mode masked BN on (N, C) tokens: the fused kernel on the real rows.

    ``idx`` (n,) lists the real rows (``None``: every row). They are gathered into an
    (n, C) matrix and shifted by their first row (BN is shift-invariant; the shift keeps
    float32 exact when |mean| >> std), and PyTorch's fused BatchNorm kernel normalizes
    them. The real tokens' outputs are therefore the same bits whether or not pads are
    present, and pads never enter (even inf or NaN). Outputs are scattered back; pad
    rows are ``bias``, so they pass no gradient to x or the weight and their output
    gradient goes to the bias. Backward is the kernel's closed-form backward on the
    real rows. Also returns the real rows' mean and biased variance (no gradient).
    """

    @staticmethod
    def forward(ctx, x, idx, pads, weight, bias, eps):  # type: ignore[override]
        if idx is None:
            xs = x - x[:1]  # (N, C), shifted by the first row
        else:
            xs = x.index_select(0, idx)  # (n, C): the real rows, a new tensor
            first = xs[0].clone()  # (C,)
            xs.sub_(first)
        yr, s_mean, s_invstd = torch.native_batch_norm(
            xs, weight, bias, None, None, True, 0.0, eps
        )
        if idx is None:
            y = yr
        else:  # (N, C): real rows -> yr, pad rows -> bias; each row written once
            y = torch.empty_like(x).index_copy_(0, idx, yr)
            y.index_copy_(0, pads, bias.expand(len(pads), -1))
        ctx.save_for_backward(xs, idx, pads, weight, s_mean, s_invstd)
        ctx.eps = eps
        mean = s_mean + (x[0] if idx is None else first)  # (C,)
        var = (s_invstd.pow(-2) - eps).clamp_(min=0.0)  # (C,) biased
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, g, _gmean, _gvar):  # type: ignore[override]
        xs, idx, pads, weight, s_mean, s_invstd = ctx.saved_tensors
        gr = g if idx is None else g.index_select(0, idx)  # (n, C)
        dxr, dw, dbias = torch.ops.aten.native_batch_norm_backward(
            gr, xs, weight, None, None, s_mean, s_invstd, True, ctx.eps,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[3], True],
        )  # fmt: skip
        if idx is None:
            return dxr, None, None, dw, dbias, None
        dx = None
        if dxr is not None:  # pads: no gradient
            dx = torch.empty_like(g).index_copy_(0, idx, dxr).index_fill_(0, pads, 0.0)
        dbias = dbias + g.index_select(0, pads).sum(0)  # pads' outputs are the bias
        return dx, None, None, dw, dbias, None


class MaskedBatchNorm(nn.Module):
    """BatchNorm whose statistics come from the real (non-padding) tokens only.

    In training mode the per-channel mean and biased variance are taken over the
    N real tokens; the running statistics are updated as in ``nn.BatchNorm1d``
    (running_var uses the unbiased variance, N / (N - 1) times the biased one;
    ``momentum=None`` keeps a cumulative average). Eval mode uses the running
    statistics. In training, pads take no part: their values never enter the
    statistics, their outputs are ``bias`` (as if they held the real mean) and they
    pass no gradient back. So outputs, gradients and running statistics at real
    tokens do not depend on how much padding a batch has or on what the pads hold
    (even inf or NaN): the real tokens' outputs are the same bits with or without
    pads. In eval mode pads are normalized like any token. Training runs PyTorch's
    fused BatchNorm kernel on the real tokens, shifted by the first of them (exact in
    float32 even when |mean| >> std); without a mask it matches ``TokenBatchNorm`` to
    float32 rounding.

    Shape: x (B, T, C), padding_mask (B, T) bool or None -> (B, T, C).
    """

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1
    ) -> None:
        super().__init__()
        _check_num_features(num_features)
        _check_eps(eps)
        _check_momentum(momentum)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(
        self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        check_norm_input(x, padding_mask, self.num_features, self.weight.dtype)
        B, T, C = x.shape
        flat = x.reshape(B * T, C)  # channels last: every token a row
        if not self.training:  # running statistics (copies: a later step may update)
            rm, rv = self.running_mean.clone(), self.running_var.clone()
            y = F.batch_norm(flat, rm, rv, self.weight, self.bias, False, 0.0, self.eps)
            return y.view(B, T, C)
        xf = flat.to(self.weight.dtype)  # float16/bfloat16 -> float32, else no copy
        idx = pads = None
        if padding_mask is not None and bool(padding_mask.any()):
            is_pad = padding_mask.reshape(B * T)
            idx, pads = (~is_pad).nonzero().squeeze(1), is_pad.nonzero().squeeze(1)
        n = B * T if idx is None else idx.numel()  # real rows
        _check_enough_tokens(n)
        y, mean, var = _MaskedBatchNorm.apply(
            xf, idx, pads, self.weight, self.bias, self.eps
        )
        update_running_stats(self, mean, var, n)
        return y.to(x.dtype).view(B, T, C)

    @staticmethod
    def batch_stats(
        x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-channel mean, biased variance and count over the real tokens of ``x``.

        Differentiable; pads never enter (even inf or NaN pads). Shape: x (B, T, C)
        -> mean (C,), var (C,), count () (a long tensor).
        """
        real, n = real_token_weights(padding_mask, x.dtype, x.shape[:2], x.device)
        real = real.unsqueeze(-1)  # (B, T, 1)
        _check_enough_tokens(n)
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)  # (B, T, C)
        mean = x.sum(dim=(0, 1)) / n  # (C,)
        var = ((x - mean) * real).pow(2).sum(dim=(0, 1)) / n  # (C,) biased
        return mean, var, n

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


# --- BN over groups of tokens: two controls of chapters 3 and 5 ----------------------


class _GroupBatchNorm(nn.Module):
    """BN whose training statistics come from groups of tokens; ``_groups`` says which.

    ``_groups(x)`` returns x as (G, n, C): G groups of n tokens. Each group is
    normalized with its own mean and biased variance. The running statistics (used in
    eval mode) are updated once per step with the mean over groups of the group means
    and of the unbiased group variances, momentum as in ``nn.BatchNorm1d``. The padding
    mask is validated and ignored (these controls are for unpadded windows). Dtypes as
    in ``norms.py``: float16/bfloat16 x into float32 parameters is computed in float32
    and returned in x's dtype.
    """

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        super().__init__()
        _check_num_features(num_features)
        _check_eps(eps)
        if momentum is None:  # the update below has no cumulative-average mode
            raise TypeError("expected momentum to be a float in [0, 1], got None")
        _check_momentum(momentum)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _groups(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _ungroup(self, y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        raise NotImplementedError

    def batch_stats(
        self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Per-group mean and biased variance, each (G, C), and the tokens per group."""
        xg = self._groups(x)  # (G, n, C)
        return xg.mean(dim=1), xg.var(dim=1, unbiased=False), xg.shape[1]

    def forward(
        self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        check_norm_input(x, padding_mask, self.num_features, self.weight.dtype)
        xf = x.to(self.weight.dtype)  # float16/bfloat16 -> float32, else no copy
        if not self.training:
            return (
                (xf - self.running_mean)
                * torch.rsqrt(self.running_var + self.eps)
                * self.weight
                + self.bias
            ).to(x.dtype)
        xg = self._groups(xf)  # (G, n, C)
        mean, var, n = self.batch_stats(xf)  # (G, C), (G, C)
        with torch.no_grad():  # the mean over groups of unbiased group variances
            self.running_mean.lerp_(mean.mean(0), self.momentum)
            self.running_var.lerp_((var * n / (n - 1)).mean(0), self.momentum)
        yg = (xg - mean[:, None]) * torch.rsqrt(var[:, None] + self.eps)  # (G, n, C)
        return (self._ungroup(yg, x.shape) * self.weight + self.bias).to(x.dtype)


class GhostBatchNorm(_GroupBatchNorm):
    """BN over "ghost batches" of ``group`` consecutive tokens (Hoffer et al., 2017).

    The B*T tokens of a (B, T, C) batch, in reading order, are cut into groups of
    ``group`` tokens, each normalized with its own statistics. With T = 32 and
    group = 8 a group is a quarter of one window; group = B * T is plain BN
    (``TokenBatchNorm``). A group holds the later tokens of its window, so a token's
    output depends on the tokens after it (a look-ahead a causal LM can exploit).

    Shape: x (B, T, C) -> (B, T, C); B * T must be a multiple of ``group`` in training.
    """

    def __init__(
        self,
        num_features: int,
        group: int = 8,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__(num_features, eps, momentum)
        check_int("group", group, 2)
        self.group = group

    def _groups(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        if (B * T) % self.group:
            raise ValueError(
                f"expected B * T to be a multiple of group={self.group}, "
                f"got B={B}, T={T}"
            )
        return x.reshape(B * T // self.group, self.group, C)  # (G, group, C)

    def _ungroup(self, y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return y.reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, group={self.group}, momentum={self.momentum}"


class PositionBatchNorm(_GroupBatchNorm):
    """Leak-free BN: statistics per position t over the batch axis only.

    Position t of every sequence is normalized with the mean and variance of the B
    tokens at position t, which come from B independent windows. No statistic
    contains a token after t of the same sequence, so a causal LM cannot read its
    targets from them; the price is only B tokens per statistic. Running statistics
    are shared by all positions.

    Shape: x (B, T, C) -> (B, T, C); B >= 2 in training.
    """

    def _groups(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < 2:
            raise ValueError(
                "expected at least 2 sequences per batch (statistics over B), "
                f"got B={x.shape[0]}"
            )
        return x.transpose(0, 1)  # (T, B, C): one group per position

    def _ungroup(self, y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return y.transpose(0, 1)  # (B, T, C)


class NoNorm(nn.Module):
    """The identity, with the norm signature: the 'no normalization' baseline."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        _check_num_features(num_features)
        self.num_features = num_features

    def forward(
        self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        check_norm_input(x, padding_mask, self.num_features)
        return x

    def extra_repr(self) -> str:
        return f"{self.num_features}"


NORM_KINDS: dict[str, Callable[..., nn.Module]] = {
    "layer": LayerNorm,
    "batch": TokenBatchNorm,
    "masked_batch": MaskedBatchNorm,
    "rms": RMSNorm,
    "none": NoNorm,
    "ghost_batch": GhostBatchNorm,
    "position_batch": PositionBatchNorm,
}


def register_norm(kind: str, factory: Callable[..., nn.Module]) -> None:
    """Add a norm kind to ``make_norm`` (``factory(num_features, **kwargs)``).

    Its norms must have the signature ``norm(x, padding_mask=None)`` and follow the
    dtype policy above; the tests check every registered kind.
    """
    NORM_KINDS[kind] = factory


def make_norm(kind: str, num_features: int, **kwargs) -> nn.Module:
    """Build a norm layer by name: one of ``NORM_KINDS`` ("layer", "batch", ...).

    Example:
        >>> norm = make_norm("masked_batch", 16)
        >>> mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])  # True: pad
        >>> norm(torch.randn(2, 5, 16), padding_mask=mask).shape
        torch.Size([2, 5, 16])
    """
    if kind not in NORM_KINDS:
        raise ValueError(
            f"unknown norm kind {kind!r}; expected one of {sorted(NORM_KINDS)}"
        )
    if not isinstance(num_features, int) or num_features < 1:
        raise ValueError(
            f"expected num_features to be a positive int, got {num_features!r}"
        )
    return NORM_KINDS[kind](num_features, **kwargs)


def __getattr__(name: str):
    """``BATCHNORM_CLASSES``, built on first use (repaired_norms imports this module).

    ``BATCHNORM_CLASSES``: every module class that normalizes with statistics over
    the batch in training: PyTorch's BatchNorm1d/2d/3d, SyncBatchNorm and their lazy
    forms, and this library's ``TokenBatchNorm``, ``MaskedBatchNorm``,
    ``GhostBatchNorm``, ``PositionBatchNorm``, ``RegularizedBatchNorm``,
    ``BatchRenorm`` and ``PowerNorm``. Use ``isinstance(m, BATCHNORM_CLASSES)``.
    """
    if name == "BATCHNORM_CLASSES":
        from .repaired_norms import BatchRenorm, PowerNorm, RegularizedBatchNorm

        return TORCH_BATCH_NORMS + (
            nn.LazyBatchNorm1d,
            nn.LazyBatchNorm2d,
            nn.LazyBatchNorm3d,
            TokenBatchNorm,
            MaskedBatchNorm,
            _GroupBatchNorm,
            GhostBatchNorm,
            PositionBatchNorm,
            RegularizedBatchNorm,
            BatchRenorm,
            PowerNorm,
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
