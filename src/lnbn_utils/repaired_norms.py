"""BatchNorm repaired for Transformers, and a norm without statistics (chapter 5).

Every module has the book's norm signature ``norm(x, padding_mask=None)`` with
``x`` of shape (B, T, C) and a bool (B, T) mask in which True marks padding, and is
registered with ``make_norm``:

* ``"power"``: PowerNorm (Shen et al., 2020) as the authors' code runs it;
  ``"power_simple"``: a simplified variant (no GroupScaling, no warm-up).
* ``"rbn"``: Regularized BN (Wang, Wu & Huang, 2022), masked BN plus a penalty on
  the gap between batch and running statistics (``stat_penalty``).
* ``"renorm"``: Batch Renormalization (Ioffe, 2017).
* ``"dyt"``: Dynamic Tanh (Zhu et al., 2025), no statistics at all.

All follow the dtype policy of ``norms.py``: x of the parameters' dtype, or
float16/bfloat16 x with float32 parameters (computed in float32, returned in x's
dtype, buffers float32); anything else is a ``TypeError``.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ._args import check_int, check_real
from .masking import real_token_weights
from .norms import (
    MaskedBatchNorm,
    _check_enough_tokens,
    _check_eps,
    _check_num_features,
    check_norm_input,
    register_norm,
    update_running_stats,
)

__all__ = [
    "BatchRenorm",
    "DyT",
    "PowerNorm",
    "RegularizedBatchNorm",
    "group_scale",
    "stat_penalty",
]


class DyT(nn.Module):
    """Dynamic Tanh (Zhu et al., 2025): y = weight * tanh(alpha * x) + bias.

    ``alpha`` is one learnable scalar, initialized to ``alpha0`` (the paper's default
    0.5; it tunes alpha0 per location in large language models); ``weight`` and
    ``bias`` are per channel. No statistics: every token is transformed on its own,
    train and eval mode compute the same function, and the mask is ignored.

    Shape: x (B, T, C) -> (B, T, C).
    """

    def __init__(self, num_features: int, alpha0: float = 0.5) -> None:
        super().__init__()
        _check_num_features(num_features)
        check_real("alpha0", alpha0, 0.0, open_low=True)
        self.num_features = num_features
        self.alpha = nn.Parameter(torch.tensor(float(alpha0)))
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_norm_input(x, padding_mask, self.num_features, self.weight.dtype)
        xf = x.to(self.weight.dtype)  # float16/bfloat16 -> float32, else no copy
        return (torch.tanh(self.alpha * xf) * self.weight + self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, alpha={self.alpha.item():.3g}"


def _zero_pads(x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """x with 0 at pads: no inf/NaN a pad holds reaches a statistic or a gradient."""
    return x if padding_mask is None else x.masked_fill(padding_mask.unsqueeze(-1), 0)


def group_scale(x: torch.Tensor, groups: int, eps: float = 1e-5) -> torch.Tensor:
    """PowerNorm's GroupScaling: divide each token by its RMS within each channel group.

    The C channels are split into ``groups`` contiguous groups (in the authors' code,
    one per attention head); y = x / sqrt(mean_group(x^2) + eps), token by token. This
    is a per-token (RMSNorm-like) step: no other token enters it.

    Shape: x (B, T, C) -> (B, T, C), C divisible by ``groups``.
    """
    B, T, C = x.shape
    check_int("groups", groups, 1)
    if C % groups:
        raise ValueError(f"expected groups >= 1 dividing C={C}, got groups={groups}")
    xg = x.reshape(B, T, groups, C // groups)  # (B, T, G, C/G)
    ms = xg.pow(2).mean(dim=-1, keepdim=True)  # (B, T, G, 1)
    return (xg * torch.rsqrt(ms + eps)).reshape(B, T, C)


class _PowerFunction(torch.autograd.Function):
    """z = x / scale_fwd; backward: (g - nu * z) / scale_bwd, then nu is updated.

    The nu update is nu <- nu * (1 - (1 - a) * Gamma) + (1 - a) * Lambda, with
    Gamma = mean(z * z) and Lambda = mean(g * z) over the real tokens, per channel
    (Shen et al., 2020, Algorithm 1). ``gamma_one`` replaces Gamma by 1, which turns
    the update into a plain running average of Lambda (the simplified variant).
    """

    @staticmethod
    def forward(ctx, x, scale_fwd, scale_bwd, nu, real, abkw, gamma_one):  # type: ignore[override]
        z = x / scale_fwd  # (B, T, C) / (C,)
        ctx.save_for_backward(z, scale_bwd, nu.clone(), real)
        ctx.nu, ctx.abkw, ctx.gamma_one = nu, abkw, gamma_one  # nu: the live buffer
        return z

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        z, scale_bwd, nu, real = ctx.saved_tensors
        n = real.sum()
        with torch.no_grad():
            lam = (g * z * real).sum(dim=(0, 1)) / n  # (C,)
            gam = 1.0 if ctx.gamma_one else (z * z * real).sum(dim=(0, 1)) / n
            ctx.nu.copy_(nu * (1 - (1 - ctx.abkw) * gam) + (1 - ctx.abkw) * lam)
        return (g - nu * z) / scale_bwd, None, None, None, None, None, None


class PowerNorm(nn.Module):
    """PowerNorm (Shen et al., 2020) as the authors' code runs it, or simplified.

    Faithful (``simplified=False``), in training:

    1. GroupScaling: z0 = ``group_scale(x, groups)``, per token (groups = heads in
       the authors' code).
    2. phi_B = mean of z0^2 over the real tokens, per channel (no centring).
    3. For the first ``warmup_steps`` updates (the authors' Transformer layer passes
       the run's learning-rate warm-up, ``args.warmup_updates``; 1000 is only the
       default of their ``NormSelect``), normalize with phi_B itself; after
       that with the running quadratic mean psi^2 of the previous steps:
       z = z0 / sqrt(psi^2 + eps). During warm-up psi^2 is also a cumulative
       average of phi_B; at every step psi^2 <- a_fwd psi^2 + (1 - a_fwd) phi_B.
    4. Backward: dL/dz0 = (g - nu * z) / sqrt(phi_B + eps), with the *current*
       batch's phi_B; nu <- nu (1 - (1 - a_bkw) Gamma) + (1 - a_bkw) Lambda with
       Gamma = mean(z^2), Lambda = mean(g z) (``_PowerFunction``).

    Inference: y = z0 / sqrt(psi^2 + eps) * weight + bias. The authors average the
    backward statistics over all positions, pads included; here over real tokens
    (the same when there are no pads).

    Simplified (``simplified=True``): no GroupScaling,
    no warm-up, the backward divides by the running psi, and Gamma = 1.

    Shape: x (B, T, C), padding_mask (B, T) bool or None -> (B, T, C).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        alpha_fwd: float = 0.9,
        alpha_bkw: float = 0.9,
        warmup_steps: int = 1000,  # NormSelect's default; see the docstring
        groups: int = 1,
        simplified: bool = False,
    ) -> None:
        super().__init__()
        _check_num_features(num_features)
        _check_eps(eps)
        check_real("alpha_fwd", alpha_fwd, 0.0, 1.0, open_high=True)
        check_real("alpha_bkw", alpha_bkw, 0.0, 1.0)
        check_int("warmup_steps", warmup_steps, 0)
        check_int("groups", groups, 1)
        if num_features % groups:
            raise ValueError(
                f"expected groups dividing num_features={num_features}, "
                f"got groups={groups}"
            )
        if not isinstance(simplified, bool):
            raise TypeError(f"expected simplified to be a bool, got {simplified!r}")
        self.num_features, self.eps = num_features, eps
        self.alpha_fwd, self.alpha_bkw = alpha_fwd, alpha_bkw
        self.warmup_steps, self.groups, self.simplified = (
            warmup_steps,
            groups,
            simplified,
        )
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_phi", torch.ones(num_features))
        self.register_buffer("nu", torch.zeros(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def _scale_in(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.simplified else group_scale(x, self.groups, self.eps)

    def quadratic_mean(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, int]:
        """phi_B: per-channel mean of the group-scaled input squared, real tokens.

        Computed in the parameters' dtype (float32 for float16/bfloat16 ``x``).
        """
        xf = x.to(self.weight.dtype)
        phi, n = self._phi(self._scale_in(xf).detach(), padding_mask)
        return phi, int(n)

    @staticmethod
    def _phi(
        z0: torch.Tensor, padding_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """phi_B (C,) of (B, T, C) ``z0`` over its real tokens, and their count ()."""
        _, n = real_token_weights(padding_mask, z0.dtype, z0.shape[:2], z0.device)
        _check_enough_tokens(n)
        if padding_mask is not None:
            z0 = z0.masked_fill(padding_mask.unsqueeze(-1), 0.0)  # inf/NaN pads too
        return z0.pow(2).sum(dim=(0, 1)) / n, n  # (C,)

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_norm_input(x, padding_mask, self.num_features, self.weight.dtype)
        xf = x.to(self.weight.dtype)  # float16/bfloat16 -> float32, else no copy
        psi = (self.running_phi + self.eps).sqrt()  # (C,), from the previous steps
        if not self.training:  # per token: pads are normalized like any token
            return (self._scale_in(xf) / psi * self.weight + self.bias).to(x.dtype)
        # In training pads read as 0 (output: bias), so no inf/NaN a pad holds
        # reaches a gradient or the nu buffer.
        z0 = self._scale_in(_zero_pads(xf, padding_mask))  # (B, T, C)
        phi, _ = self._phi(z0.detach(), padding_mask)
        real, _ = real_token_weights(padding_mask, xf.dtype, xf.shape[:2], xf.device)
        real = real.unsqueeze(-1)  # (B, T, 1)
        with torch.no_grad():
            self.num_batches_tracked += 1
        step = int(self.num_batches_tracked)
        if self.simplified:
            fwd = bwd = psi
        else:  # batch statistic in warm-up, running after; backward: always the batch's
            bwd = (phi + self.eps).sqrt()
            fwd = bwd if step <= self.warmup_steps else psi
        z = _PowerFunction.apply(
            z0, fwd, bwd, self.nu, real, self.alpha_bkw, self.simplified
        )
        with torch.no_grad():
            if not self.simplified and step < self.warmup_steps:  # cumulative average
                self.running_phi.mul_((step - 1) / step).add_(phi / step)
            self.running_phi.lerp_(phi, 1.0 - self.alpha_fwd)
        return (z * self.weight + self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, alpha_fwd={self.alpha_fwd}, "
            f"alpha_bkw={self.alpha_bkw}, warmup_steps={self.warmup_steps}, "
            f"groups={self.groups}, simplified={self.simplified}"
        )


class RegularizedBatchNorm(MaskedBatchNorm):
    """Regularized BN (Wang, Wu & Huang, 2022): masked BN plus a penalty on its TID.

    Training normalizes with the batch's mean and biased variance over the real
    tokens, like ``MaskedBatchNorm``. As in the paper's code, the running variance
    averages the *biased* batch variance, and the penalty compares the batch
    statistics with the running ones *after* this step's update (as constants):
    ``penalty = penalty_mean * sum_c (mu_B - mu_run)^2
    + penalty_var * sum_c |var_B - var_run|`` (its "diff" penalty). The training
    loss must add it: ``extra_loss=lu.stat_penalty``. Eval mode uses the running
    statistics and sets ``penalty`` to 0. Defaults: the paper's Pre-LN setting
    (0.1, 0.01); its code's momentum is 0.05, here 0.1 like the book's other BNs
    (``momentum=None``: a cumulative average, as in ``nn.BatchNorm1d``).

    Shape: x (B, T, C), padding_mask (B, T) bool or None -> (B, T, C).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        penalty_mean: float = 0.1,
        penalty_var: float = 0.01,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        check_real("penalty_mean", penalty_mean, 0.0)
        check_real("penalty_var", penalty_var, 0.0)
        self.penalty_mean, self.penalty_var = penalty_mean, penalty_var
        self.penalty = torch.zeros(())

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_norm_input(x, padding_mask, self.num_features, self.weight.dtype)
        if not self.training:
            self.penalty = torch.zeros((), device=x.device)
            return super().forward(x, padding_mask)
        xf = _zero_pads(x.to(self.weight.dtype), padding_mask)  # (B, T, C)
        mean, var, n = self.batch_stats(xf, padding_mask)
        update_running_stats(self, mean, var, n, unbiased=False)  # updated first
        self.penalty = (
            self.penalty_mean * (mean - self.running_mean).pow(2).sum()
            + self.penalty_var * (var - self.running_var).abs().sum()
        )
        y = (xf - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        return y.to(x.dtype)

    def __getstate__(self) -> dict:
        """Copies and pickles hold the penalty's value, not the step's graph."""
        state = super().__getstate__()
        state = dict(state if isinstance(state, dict) else self.__dict__)
        state["penalty"] = self.penalty.detach()
        return state

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, penalty_mean={self.penalty_mean}, "
            f"penalty_var={self.penalty_var}"
        )


def stat_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of the ``penalty`` of every layer that has one (Regularized BN), or 0.

    Use it as the extra training loss: ``lu.train(..., extra_loss=lu.stat_penalty)``.
    """
    terms = [
        m.penalty
        for m in model.modules()
        if isinstance(getattr(m, "penalty", None), torch.Tensor)
    ]
    return torch.stack(terms).sum() if terms else torch.zeros(())


class BatchRenorm(MaskedBatchNorm):
    """Batch Renormalization (Ioffe, 2017) over the real tokens.

    Training: y = ((x - mu_B) / sigma_B * r + d) * weight + bias with
    r = clip(sigma_B / sigma_run, 1/r_max, r_max) and
    d = clip((mu_B - mu_run) / sigma_run, -d_max, d_max), both constants (no
    gradient). Unclipped, the forward pass equals the eval function
    (x - mu_run) / sigma_run, while the gradient still sees the batch statistics.
    Eval mode and the running-statistics update are ``MaskedBatchNorm``'s. The
    limits open linearly from (1, 0), plain BN, to (r_max, d_max) over the first
    ``warmup_steps`` steps, as in the paper.

    Shape: x (B, T, C), padding_mask (B, T) bool or None -> (B, T, C).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_steps: int = 50,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        check_real("r_max", r_max, 1.0)
        check_real("d_max", d_max, 0.0)
        check_int("warmup_steps", warmup_steps, 0)
        self.r_max, self.d_max, self.warmup_steps = r_max, d_max, warmup_steps

    def limits(self) -> tuple[float, float]:
        """The current (r_max, d_max), opened linearly over ``warmup_steps`` steps."""
        done = int(self.num_batches_tracked)
        t = min(1.0, done / self.warmup_steps) if self.warmup_steps else 1.0
        return 1.0 + t * (self.r_max - 1.0), t * self.d_max

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_norm_input(x, padding_mask, self.num_features, self.weight.dtype)
        if not self.training:
            return super().forward(x, padding_mask)
        xf = _zero_pads(x.to(self.weight.dtype), padding_mask)  # (B, T, C)
        mean, var, n = self.batch_stats(xf, padding_mask)
        sigma_b = (var + self.eps).sqrt()  # (C,)
        sigma_run = (self.running_var + self.eps).sqrt()  # (C,)
        r_max, d_max = self.limits()
        r = (sigma_b / sigma_run).detach().clamp(1.0 / r_max, r_max)
        d = ((mean - self.running_mean) / sigma_run).detach().clamp(-d_max, d_max)
        update_running_stats(self, mean, var, n)  # as MaskedBatchNorm: unbiased
        return (((xf - mean) / sigma_b * r + d) * self.weight + self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}, "
            f"warmup_steps={self.warmup_steps}"
        )


register_norm("dyt", DyT)
register_norm("power", PowerNorm)
register_norm("power_simple", partial(PowerNorm, simplified=True))
register_norm("rbn", RegularizedBatchNorm)
register_norm("renorm", BatchRenorm)
