"""Who depends on whom: the token-to-token block structure of a layer's Jacobian.

For a layer ``y = f(x)`` on (B, T, C) activations, the Jacobian has one C x C block
``d y[b, t, :] / d x[b', t', :]`` for every pair of tokens. A per-token layer
(LayerNorm, RMSNorm, eval-mode BatchNorm) is block-diagonal; train-mode BatchNorm
couples every token of the batch with every other, across examples and from later
positions to earlier ones. ``token_jacobian_rows`` computes a few rows of that grid
at batch sizes where the whole grid would not fit, and ``influence_summary`` turns
rows into per-pair and per-partner influence relative to the token's own block.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn as nn

from .norms import TORCH_BATCH_NORMS

__all__ = ["token_jacobian_norms", "token_jacobian_rows", "influence_summary"]


def token_jacobian_norms(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
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
        raise ValueError(
            "expected fn to map (B, T, C) to (B, T, C), "
            f"got Jacobian of shape {tuple(J.shape)}"
        )
    N = B * T
    return J.reshape(N, C, N, C).pow(2).sum(dim=(1, 3)).sqrt().detach()  # (N, N)


def _check_supported(module: nn.Module) -> None:
    """Refuse modules that update buffers in forward, other than nn.BatchNorm*."""
    if not module.training:
        return
    for name, m in module.named_modules():
        own = [b for b, _ in m.named_buffers(recurse=False)]
        if own and not isinstance(m, TORCH_BATCH_NORMS) and m.training:
            raise ValueError(
                "expected a module jacrev can differentiate: in training mode only "
                "norms without buffers (LayerNorm, RMSNorm, NoNorm, DyT) or "
                "nn.BatchNorm* subclasses (TokenBatchNorm); got "
                f"{type(m).__name__} at {name or 'the top level'} with buffers "
                "updated in place. Call .eval() on it, or wrap its batch statistics "
                "in a function of x"
            )


def token_jacobian_rows(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tokens: Sequence[int]
) -> torch.Tensor:
    """Rows of ``token_jacobian_norms`` for a few output tokens, at any batch size.

    Entry ``[k, j]`` is ``|| d y[i_k] / d x[j] ||_F`` for output token
    ``i_k = tokens[k]`` and every input token j (both indexed ``b * T + t``). Exact:
    one backward pass per output channel of each listed token, so the cost grows
    with D * len(tokens), never with the (B*T)^2 blocks of the full Jacobian. ``fn``
    is called once, as given (an ``nn.Module`` in training mode updates its running
    statistics once; pass a copy to keep them).

    Shape: x (B, T, C), ``fn(x)`` (B, T, D) -> (len(tokens), B*T).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected x of shape (B, T, C), got {got}")
    B, T, C = x.shape
    bad = [i for i in tokens if not 0 <= int(i) < B * T]
    if bad or not len(tokens):
        raise ValueError(f"expected tokens in [0, {B * T}), got {list(tokens)!r}")
    x = x.detach().requires_grad_()
    y = fn(x)
    if y.dim() != 3 or y.shape[:2] != (B, T):
        raise ValueError(
            f"expected fn to map (B, T, C) to (B, T, D), got {tuple(y.shape)}"
        )
    y = y.reshape(B * T, -1)  # (N, D)
    rows = torch.zeros(len(tokens), B * T)
    for k, i in enumerate(tokens):
        for d in range(y.shape[1]):  # one output channel of token i per backward pass
            (g,) = torch.autograd.grad(y[int(i), d], x, retain_graph=True)
            rows[k] += g.reshape(B * T, C).pow(2).sum(1)
    return rows.sqrt()


def influence_summary(
    rows: torch.Tensor, tokens: Sequence[int], B: int, T: int
) -> dict[str, float]:
    """How strongly other tokens move an output token, relative to the token itself.

    ``rows`` are block norms from ``token_jacobian_rows`` (or rows of
    ``token_jacobian_norms``) for output tokens ``tokens``. Every influence is
    divided by the token's own block ``|| d y_i / d x_i ||_F`` and averaged over the
    listed tokens:

    * ``"per_pair"``: one input token of another sequence (mean over them);
    * ``"partner"``: a whole other sequence, the Frobenius norm of its T blocks
      together (mean over the B - 1 partners; 0 when B = 1);
    * ``"future_pair"``: one later token of the same sequence (mean over them;
      0 at a sequence's last position).

    Unlike a share of the total block-norm mass, which grows with the number of
    partners while each one's pull shrinks, these do not depend on how many tokens
    there are, only on how strongly each one couples.
    """
    if rows.dim() != 2 or rows.shape != (len(tokens), B * T):
        want = (len(tokens), B * T)
        raise ValueError(f"expected rows of shape {want}, got {tuple(rows.shape)}")
    b = torch.arange(B).repeat_interleave(T)  # sequence of each flattened token
    t = torch.arange(T).repeat(B)  # position of each flattened token
    out = {"per_pair": 0.0, "partner": 0.0, "future_pair": 0.0}
    for row, i in zip(rows, tokens):
        i = int(i)
        rel = row / row[i]
        other, later = b != b[i], (b == b[i]) & (t > t[i])
        per_seq = torch.zeros(B).index_add_(0, b, rel.pow(2)).sqrt()  # (B,)
        out["per_pair"] += float(rel[other].mean()) if B > 1 else 0.0
        out["partner"] += (
            float(per_seq[torch.arange(B) != b[i]].mean()) if B > 1 else 0.0
        )
        out["future_pair"] += float(rel[later].mean()) if bool(later.any()) else 0.0
    return {k: v / len(tokens) for k, v in out.items()}
