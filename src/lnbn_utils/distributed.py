"""Synchronized BatchNorm and collective counting (``torch.distributed``, any backend).

In data-parallel training every process holds a shard of the batch. BatchNorm then
either normalizes with the shard's own statistics (a different function from
full-batch BN) or synchronizes them. LayerNorm needs neither.

* ``SyncTokenBatchNorm``: ``TokenBatchNorm`` with synchronized statistics (our
  implementation, because ``nn.SyncBatchNorm`` refuses CPU tensors). Its forward
  exchanges each rank's (count, mean, M2) per channel and combines them stably; its
  backward all-reduces the gradient of what was exchanged. ``nn.SyncBatchNorm`` in
  torch 2.13 does the same job with an all-gather of (mean, invstd, count) in the
  forward and an all-reduce of two per-channel sums in the backward.
  ``convert_sync_batchnorm(model)`` swaps it in for every ``TokenBatchNorm``.
* ``CollectiveCounter`` / ``all_reduce_counted``: count every all-reduce and its
  payload bytes per tag (``"bn_forward"``, ``"bn_backward"``, ``"grad"``, ...).

The two-process experiment that uses them lives in ``parallel_experiment``.

Example (counting what one training step sends, in a single process)::

    model = lu.convert_sync_batchnorm(
        lu.TinyTransformer(lu.TransformerConfig(norm="batch"))
    )
    with lu.CollectiveCounter() as counter:
        lu.lm_loss(model, (x, y)).backward()
    counter.bytes  # {"bn_forward": ..., "bn_backward": ...}: payload bytes per rank
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from .norms import TokenBatchNorm, check_norm_input, update_running_stats

__all__ = [
    "CollectiveCounter",
    "all_reduce_counted",
    "sync_batch_stats",
    "SyncTokenBatchNorm",
    "convert_sync_batchnorm",
    "free_port",
]

_ACTIVE_COUNTERS: list["CollectiveCounter"] = []


@dataclass(
    eq=False
)  # identity, not contents: nested counters must find themselves on exit
class CollectiveCounter:
    """Count all-reduce calls and payload bytes per tag while active; a context manager.

    Every ``all_reduce_counted(tensor, tag)`` issued inside ``with counter:`` adds one
    call and ``tensor.numel() * tensor.element_size()`` bytes to ``counter.calls[tag]``
    and ``counter.bytes[tag]``. Bytes are the payload one rank contributes; a ring
    all-reduce moves about ``2 (W - 1) / W`` times that per rank over the wire.
    Calls are counted even without a process group (a world of one), so a single
    process can measure what each rank of a data-parallel run would send.
    """

    calls: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)

    def record(self, tag: str, tensor: torch.Tensor) -> None:
        """Add one call of ``tensor``'s size under ``tag``."""
        self.calls[tag] = self.calls.get(tag, 0) + 1
        self.bytes[tag] = (
            self.bytes.get(tag, 0) + tensor.numel() * tensor.element_size()
        )

    def total_calls(self, prefix: str = "") -> int:
        """Calls summed over the tags starting with ``prefix`` (default: all tags)."""
        return sum(v for k, v in self.calls.items() if k.startswith(prefix))

    def total_bytes(self, prefix: str = "") -> int:
        """Bytes summed over the tags starting with ``prefix`` (default: all tags)."""
        return sum(v for k, v in self.bytes.items() if k.startswith(prefix))

    def __enter__(self) -> "CollectiveCounter":
        _ACTIVE_COUNTERS.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE_COUNTERS.remove(self)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_counted(tensor: torch.Tensor, tag: str = "other") -> torch.Tensor:
    """Sum ``tensor`` in place over all ranks; every active counter records it.

    Without an initialized process group (or with one process) the sum is the
    identity; the call is still recorded. Returns ``tensor``.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(tensor).__name__}")
    for counter in _ACTIVE_COUNTERS:
        counter.record(tag, tensor)
    if _world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class _AllReduceSum(torch.autograd.Function):
    """y = sum over ranks of x. Backward: each rank's x feeds every rank's loss, so the
    gradient is the sum over ranks of the incoming gradients (a second all-reduce)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, tag: str
    ) -> torch.Tensor:
        ctx.tag = tag
        return all_reduce_counted(x.clone(), f"{tag}_forward")

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        return all_reduce_counted(grad.clone(), f"{ctx.tag}_backward"), None


def sync_batch_stats(
    x: torch.Tensor, tag: str = "bn"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean, biased variance and token count over all ranks' tokens.

    Each rank computes its own count n_r, mean m_r and sum of squared deviations
    M2_r = sum (x - m_r)^2 (two passes over its own tokens), and the ranks exchange
    these 2C + 1 numbers: one all-reduce of a (W, 2C + 1) tensor in which rank r
    fills row r (an all-gather written as an all-reduce, tag ``f"{tag}_forward"``).
    Every rank then combines them with Chan et al.'s parallel formula,
    mean = sum n_r m_r / n and M2 = sum [M2_r + n_r (m_r - mean)^2]. Unlike the
    one-pass E[x^2] - mean^2, this keeps float32 precision when the mean is large
    compared with the spread (tested at mean 1e3). Differentiable: the backward pass
    all-reduces the gradient of the gathered tensor (tag ``f"{tag}_backward"``).

    Shape: x (B, T, C) -> mean (C,), var (C,), count () (a float tensor).
    """
    B, T, C = x.shape
    world = _world_size()
    rank = dist.get_rank() if world > 1 else 0
    flat = x.reshape(B * T, C)  # (N_r, C): this rank's tokens
    mean_r = flat.mean(0)
    m2_r = (flat - mean_r).pow(2).sum(0)
    n_r = torch.full((1,), B * T, dtype=x.dtype, device=x.device)
    mine = torch.cat([n_r, mean_r, m2_r])  # (2C + 1,)
    rows = torch.zeros(world, 2 * C + 1, dtype=x.dtype, device=x.device)
    rows = rows.index_put((torch.tensor([rank]),), mine[None])  # row r is ours
    gathered = _AllReduceSum.apply(rows, tag)  # (W, 2C + 1): every rank's row
    n_all, mean_all, m2_all = (
        gathered[:, :1].detach(),
        gathered[:, 1 : C + 1],
        gathered[:, C + 1 :],
    )
    n = n_all.sum()
    mean = (n_all * mean_all).sum(0) / n
    var = (m2_all + n_all * (mean_all - mean).pow(2)).sum(0) / n
    return mean, var, n


class SyncTokenBatchNorm(TokenBatchNorm):
    """``TokenBatchNorm`` whose training statistics cover the tokens of every rank.

    Same parameters, buffers and eval-mode behaviour as ``TokenBatchNorm`` (so
    state dicts load both ways). In training mode the per-channel mean and biased
    variance come from ``sync_batch_stats`` (2 all-reduces of W (2C + 1) numbers per
    layer per training step: forward and backward); running statistics use the
    global unbiased variance, as ``nn.BatchNorm1d`` does. Over W processes it
    computes full-batch BN (Ioffe & Szegedy, 2015) to float rounding, like
    ``nn.SyncBatchNorm``. Dtypes as ``TokenBatchNorm``: float16/bfloat16 x into
    float32 parameters is computed in float32 and returned in x's dtype.

    Shape: x (B, T, C) -> (B, T, C).
    """

    def forward(
        self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:  # type: ignore[override]
        check_norm_input(x, padding_mask, self.num_features, self.weight.dtype)
        if not self.training and self.track_running_stats:
            return super().forward(
                x, padding_mask
            )  # running statistics, no communication
        xf = x.to(self.weight.dtype)  # float16/bfloat16 -> float32, else no copy
        mean, var, n = sync_batch_stats(xf)
        if n < 2:
            raise ValueError(
                f"expected at least 2 tokens over all ranks (training), got {int(n)}"
            )
        if self.training and self.track_running_stats:
            update_running_stats(self, mean, var, n)  # global unbiased variance
        y = (xf - mean) * torch.rsqrt(
            var + self.eps
        )  # (B, T, C), channels last: no transpose needed
        return (y * self.weight + self.bias if self.affine else y).to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``TokenBatchNorm`` by a ``SyncTokenBatchNorm``, in place.

    Parameters and running statistics are copied. Returns ``module`` (or the
    replacement, when ``module`` itself is a ``TokenBatchNorm``).
    """
    if isinstance(module, TokenBatchNorm) and not isinstance(
        module, SyncTokenBatchNorm
    ):
        sync = SyncTokenBatchNorm(
            module.num_features, eps=module.eps, momentum=module.momentum
        )
        sync.load_state_dict(module.state_dict())
        return sync.train(module.training)
    for name, child in module.named_children():
        setattr(module, name, convert_sync_batchnorm(child))
    return module


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (bind to port 0 and ask)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
