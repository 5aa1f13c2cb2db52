"""Who depends on whom: the token-to-token block structure of a layer's Jacobian.

For a layer ``y = f(x)`` on (B, T, C) activations, the Jacobian has one C x C block
``d y[b, t, :] / d x[b', t', :]`` for every pair of tokens. A per-token layer
(LayerNorm, RMSNorm, eval-mode BatchNorm) is block-diagonal; train-mode BatchNorm
couples every token of the batch with every other, across examples and from later
positions to earlier ones.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn as nn

__all__ = ["token_jacobian_norms", "dependence_summary"]


def token_jacobian_norms(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Frobenius norms of the C x C blocks of the Jacobian of ``fn`` at ``x``.

    Entry ``[i, j]`` is ``|| d y[b, t, :] / d x[b', t', :] ||_F`` with output token
    ``i = b * T + t`` and input token ``j = b' * T + t'``. Computed with
    ``torch.func.jacrev``. An ``nn.Module`` is deep-copied first, so its running
    statistics are never touched; a copy in training mode gets
    ``torch.func.replace_all_batch_norm_modules_`` (jacrev cannot differentiate
    through the in-place running-statistics update; the batch statistics, and so
    the Jacobian, are unchanged). Norms that update buffers in place without
    subclassing ``nn.BatchNorm*`` are not supported in training mode.

    Shape: x (B, T, C), ``fn(x)`` (B, T, C) -> (B*T, B*T).

    Example:
        >>> norms = token_jacobian_norms(nn.LayerNorm(8), torch.randn(2, 3, 8))
        >>> norms.shape, bool((norms - torch.diag(norms.diagonal())).abs().max() == 0)
        (torch.Size([6, 6]), True)
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected x of shape (B, T, C), got {got}")
    if isinstance(fn, nn.Module):
        _check_supported(fn)
        fn = copy.deepcopy(fn)
        if fn.training:
            torch.func.replace_all_batch_norm_modules_(fn)
    B, T, C = x.shape
    J = torch.func.jacrev(fn)(x.detach())  # (B, T, C, B, T, C)
    if J.shape != (B, T, C, B, T, C):
        raise ValueError(f"expected fn to map (B, T, C) to (B, T, C), got Jacobian of shape {tuple(J.shape)}")
    N = B * T
    return J.reshape(N, C, N, C).pow(2).sum(dim=(1, 3)).sqrt().detach()  # (N, N)


def _check_supported(module: nn.Module) -> None:
    """Refuse modules that update buffers in their forward pass outside nn.BatchNorm*."""
    if not module.training:
        return
    for name, m in module.named_modules():
        own = [b for b, _ in m.named_buffers(recurse=False)]
        if own and not isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            kind = type(m).__name__
            raise ValueError(
                "expected a module jacrev can differentiate: in training mode only "
                "norms without buffers (LayerNorm, RMSNorm, NoNorm, DyT) or nn.BatchNorm* "
                f"subclasses (TokenBatchNorm); got {kind} at {name or 'the top level'} "
                "with buffers updated in place. Call .eval() on it, or wrap its "
                "batch statistics in a function of x"
            )


def dependence_summary(norms: torch.Tensor, B: int, T: int) -> dict[str, float]:
    """Sum the block norms of ``token_jacobian_norms`` by who influences whom.

    Returns the sums over blocks (output token (b, t), input token (b', t')) with
    ``"self"``: the same token; ``"past"``: same example, earlier input (t' < t);
    ``"future"``: same example, later input (t' > t), a leak for a causal model;
    ``"cross_example"``: another example (b' != b); and ``"total"``.
    """
    if norms.shape != (B * T, B * T):
        raise ValueError(f"expected block norms of shape (B*T, B*T) = {(B * T, B * T)}, got {tuple(norms.shape)}")
    b = torch.arange(B).repeat_interleave(T)  # example of each flattened token
    t = torch.arange(T).repeat(B)  # position of each flattened token
    same = b[:, None] == b[None, :]  # rows: output token, columns: input token
    masks = {
        "self": same & (t[:, None] == t[None, :]),
        "past": same & (t[None, :] < t[:, None]),
        "future": same & (t[None, :] > t[:, None]),
        "cross_example": ~same,
    }
    out = {k: float(norms[m].sum()) for k, m in masks.items()}
    out["total"] = float(norms.sum())
    return out
