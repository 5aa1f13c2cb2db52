"""Data-parallel BatchNorm on a real engine (``torch.distributed``, gloo, CPU).

In data-parallel training every process holds a shard of the batch. BatchNorm then
either normalizes with the shard's own statistics (a different function from
full-batch BN) or synchronizes them: every BN layer all-reduces per-channel sums,
sums of squares and the token count in the forward pass, and the matching
gradient in the backward pass. LayerNorm needs neither.

* ``SyncTokenBatchNorm``: ``TokenBatchNorm`` with synchronized statistics, as an
  autograd-aware all-reduce (``nn.SyncBatchNorm`` refuses CPU tensors).
  ``convert_sync_batchnorm(model)`` swaps it in for every ``TokenBatchNorm``.
* ``CollectiveCounter`` / ``all_reduce_counted``: count every all-reduce and its
  payload bytes per tag (``"bn_forward"``, ``"bn_backward"``, ``"grad"``, ...).
* ``run_data_parallel``: spawn ``world_size`` gloo processes, train a tiny LM a few
  steps data-parallel, and compare outputs and gradients with one process holding
  the whole batch.

Example (counting what one training step sends, in a single process)::

    model = lu.convert_sync_batchnorm(lu.TinyTransformer(lu.TransformerConfig(norm="batch")))
    with lu.CollectiveCounter() as counter:
        lu.lm_loss(model, (x, y)).backward()
    counter.bytes  # {"bn_forward": ..., "bn_backward": ...}: payload bytes per rank

    stats = lu.run_data_parallel(("batch", "sync_batch", "layer"), world_size=2)
    stats["sync_batch"]["max_abs_err_output"], stats["sync_batch"]["norm_bytes_per_layer_per_step"]
"""
from __future__ import annotations

import copy
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .models import TinyTransformer, TransformerConfig
from .norms import LayerNorm, TokenBatchNorm, check_norm_input

__all__ = [
    "CollectiveCounter",
    "all_reduce_counted",
    "sync_batch_stats",
    "SyncTokenBatchNorm",
    "convert_sync_batchnorm",
    "free_port",
    "run_data_parallel",
    "DP_NORMS",
]

_ACTIVE_COUNTERS: list["CollectiveCounter"] = []


@dataclass(eq=False)  # identity, not contents: nested counters must find themselves on exit
class CollectiveCounter:
    """Count all-reduce calls and payload bytes per tag while active (a context manager).

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
        self.bytes[tag] = self.bytes.get(tag, 0) + tensor.numel() * tensor.element_size()

    def total_calls(self, prefix: str = "") -> int:
        """Calls summed over the tags that start with ``prefix`` (all tags by default)."""
        return sum(v for k, v in self.calls.items() if k.startswith(prefix))

    def total_bytes(self, prefix: str = "") -> int:
        """Bytes summed over the tags that start with ``prefix`` (all tags by default)."""
        return sum(v for k, v in self.bytes.items() if k.startswith(prefix))

    def __enter__(self) -> "CollectiveCounter":
        _ACTIVE_COUNTERS.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE_COUNTERS.remove(self)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_counted(tensor: torch.Tensor, tag: str = "other") -> torch.Tensor:
    """Sum ``tensor`` in place over the default process group, recorded by every active counter.

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
    def forward(ctx: Any, x: torch.Tensor, tag: str) -> torch.Tensor:  # type: ignore[override]
        ctx.tag = tag
        return all_reduce_counted(x.clone(), f"{tag}_forward")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return all_reduce_counted(grad.clone(), f"{ctx.tag}_backward"), None


def sync_batch_stats(x: torch.Tensor, tag: str = "bn") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean, biased variance and token count over all ranks' tokens.

    One all-reduce of the packed vector [sum_x (C), sum_x^2 (C), count (1)]
    (tag ``f"{tag}_forward"``), differentiable: the backward pass all-reduces its
    gradient (tag ``f"{tag}_backward"``). var = E[x^2] - mean^2 (one pass, so one
    collective; fine in float32 for activations of moderate mean).

    Shape: x (B, T, C) -> mean (C,), var (C,), count () (a float tensor).
    """
    B, T, C = x.shape
    count = torch.full((1,), B * T, dtype=x.dtype, device=x.device)
    local = torch.cat([x.sum(dim=(0, 1)), x.pow(2).sum(dim=(0, 1)), count])  # (2C + 1,)
    total = _AllReduceSum.apply(local, tag)
    n = total[2 * C].detach()
    mean = total[:C] / n
    var = (total[C : 2 * C] / n - mean.pow(2)).clamp_min(0.0)
    return mean, var, n


class SyncTokenBatchNorm(TokenBatchNorm):
    """``TokenBatchNorm`` whose training statistics cover the tokens of every rank.

    Same parameters, buffers and eval-mode behaviour as ``TokenBatchNorm`` (so
    state dicts load both ways). In training mode the per-channel mean and biased
    variance come from ``sync_batch_stats`` (2 all-reduces of 2C + 1 numbers per
    layer per training step: forward and backward); running statistics use the
    global unbiased variance, as ``nn.BatchNorm1d`` does. Over W processes it
    computes full-batch BN to float rounding, like ``nn.SyncBatchNorm`` (Ioffe & Szegedy, 2015).

    Shape: x (B, T, C) -> (B, T, C).
    """

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:  # type: ignore[override]
        check_norm_input(x, padding_mask, self.num_features)
        if not self.training and self.track_running_stats:
            return super().forward(x, padding_mask)  # running statistics, no communication
        mean, var, n = sync_batch_stats(x)
        if n < 2:
            raise ValueError(f"expected at least 2 tokens over all ranks in training mode, got {int(n)}")
        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1))
        y = (x - mean) * torch.rsqrt(var + self.eps)  # (B, T, C), channels last: no transpose needed
        return y * self.weight + self.bias if self.affine else y

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked += 1
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, m)
        self.running_var.lerp_(unbiased_var, m)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``TokenBatchNorm`` inside ``module`` by a ``SyncTokenBatchNorm``, in place.

    Parameters and running statistics are copied. Returns ``module`` (or the
    replacement, when ``module`` itself is a ``TokenBatchNorm``).
    """
    if isinstance(module, TokenBatchNorm) and not isinstance(module, SyncTokenBatchNorm):
        sync = SyncTokenBatchNorm(module.num_features, eps=module.eps, momentum=module.momentum)
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


#: What ``run_data_parallel`` can compare: the data-parallel variant and its single-process reference.
DP_NORMS = {
    "batch": "per-rank BN: each rank normalizes its shard (reference: full-batch TokenBatchNorm)",
    "sync_batch": "SyncTokenBatchNorm (reference: full-batch TokenBatchNorm)",
    "layer": "LayerNorm (reference: LayerNorm)",
}


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).abs().max())


def _compare(norm: str, rank: int, world: int, cfg: dict) -> dict:
    """One rank's side of the comparison for one norm kind (runs inside a worker)."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg["seed"])
    ref = TinyTransformer(
        TransformerConfig(
            vocab_size=cfg["vocab_size"], block_size=cfg["seq_len"], n_layer=cfg["n_layer"],
            n_head=2, n_embd=cfg["n_embd"], norm="layer" if norm == "layer" else "batch",
        )
    )
    dp = copy.deepcopy(ref)  # same weights on every rank and in the reference
    if norm == "sync_batch":
        convert_sync_batchnorm(dp)
    n_norm = sum(isinstance(m, (LayerNorm, TokenBatchNorm)) for m in dp.modules())
    seen: dict[str, torch.Tensor] = {}  # input of the first norm layer, for the shard statistics
    ref.blocks[0].norm1.register_forward_pre_hook(lambda m, a: seen.__setitem__("full", a[0].detach()))
    dp.blocks[0].norm1.register_forward_pre_hook(lambda m, a: seen.__setitem__("shard", a[0].detach()))
    g = torch.Generator().manual_seed(cfg["seed"] + 1)  # the same data stream on every rank
    b = cfg["batch_size"] // world
    shard = slice(rank * b, (rank + 1) * b)
    err = {"output": 0.0, "grad": 0.0, "shard_mean": 0.0, "shard_var": 0.0}
    with CollectiveCounter() as counter:
        for _ in range(cfg["steps"]):
            s = torch.randint(cfg["vocab_size"], (cfg["batch_size"], cfg["seq_len"] + 1), generator=g)
            x, y = s[:, :-1], s[:, 1:]
            ref_logits = ref(x)  # (B, T, V): one process, the whole batch
            F.cross_entropy(ref_logits.flatten(0, 1), y.flatten()).backward()
            logits = dp(x[shard])  # (B / W, T, V): this rank's shard
            F.cross_entropy(logits.flatten(0, 1), y[shard].flatten()).backward()
            for p in dp.parameters():  # what DDP does: average the gradients over ranks
                all_reduce_counted(p.grad, "grad").div_(world)
            err["output"] = max(err["output"], _max_abs(logits, ref_logits[shard]))
            err["grad"] = max(err["grad"], max(_max_abs(p.grad, q.grad) for p, q in zip(dp.parameters(), ref.parameters())))
            full, part = seen["full"].flatten(0, 1), seen["shard"].flatten(0, 1)  # (tokens, C)
            err["shard_mean"] = max(err["shard_mean"], _max_abs(part.mean(0), full.mean(0)))
            err["shard_var"] = max(err["shard_var"], _max_abs(part.var(0, unbiased=False), full.var(0, unbiased=False)))
            with torch.no_grad():  # plain SGD by hand: torch.optim's first use imports torch._dynamo (~2 s)
                for p in (*ref.parameters(), *dp.parameters()):
                    p.sub_(cfg["lr"] * p.grad)
                    p.grad = None
    return {
        "rank": rank,
        "max_abs_err_output": err["output"],
        "max_abs_err_grad": err["grad"],
        "max_abs_diff_shard_mean": err["shard_mean"],
        "max_abs_diff_shard_var": err["shard_var"],
        "n_norm_layers": n_norm,
        "calls": dict(counter.calls),
        "bytes": dict(counter.bytes),
        "seconds": time.perf_counter() - t0,
    }


def _worker(rank: int, world: int, port: int, norms: list[str], cfg: dict, out_dir: str) -> None:
    """Entry point of one spawned process (module-level, so ``mp.spawn`` can pickle it)."""
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):  # talk over loopback, whatever the hostname resolves to
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
        timeout=timedelta(seconds=cfg["timeout_s"]),
    )
    try:
        result = {norm: _compare(norm, rank, world, cfg) for norm in norms}
        dist.barrier()
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def _summarize(per_rank: list[dict], steps: int) -> dict:
    """Worst case over ranks, and collectives per training step (per rank)."""
    r0 = per_rank[0]
    bn_calls = sum(v for k, v in r0["calls"].items() if k.startswith("bn_"))
    bn_bytes = sum(v for k, v in r0["bytes"].items() if k.startswith("bn_"))
    n = r0["n_norm_layers"]
    out = {k: max(r[k] for r in per_rank) for k in ("max_abs_err_output", "max_abs_err_grad",
                                                     "max_abs_diff_shard_mean", "max_abs_diff_shard_var", "seconds")}
    out.update(
        n_norm_layers=n,
        calls_per_step={k: v / steps for k, v in r0["calls"].items()},
        bytes_per_step={k: v / steps for k, v in r0["bytes"].items()},
        norm_calls_per_layer_per_step=bn_calls / (n * steps),
        norm_bytes_per_layer_per_step=bn_bytes / (n * steps),
        per_rank=per_rank,
    )
    return out


def run_data_parallel(
    norms: Sequence[str] = ("batch", "sync_batch", "layer"),
    *,
    world_size: int = 2,
    steps: int = 3,
    batch_size: int = 8,
    seq_len: int = 8,
    vocab_size: int = 16,
    n_layer: int = 1,
    n_embd: int = 16,
    lr: float = 0.1,
    seed: int = 0,
    timeout_s: float = 60.0,
) -> dict[str, dict]:
    """Train a tiny LM data-parallel on ``world_size`` gloo processes; compare with one process.

    Every rank builds the same ``TinyTransformer`` (seeded by ``seed``) and draws the
    same batches of random tokens; rank r trains on its contiguous shard of
    ``batch_size // world_size`` sequences, averaging gradients with counted
    all-reduces (what DDP does), while also running the single-process reference on
    the whole batch. Both take ``steps`` SGD steps. ``norms`` picks from ``DP_NORMS``.

    Returns ``{norm: stats}``; ``stats`` holds the worst case over ranks and steps of
    ``max_abs_err_output`` (logits vs the reference's rows of the same examples),
    ``max_abs_err_grad`` (averaged gradients vs the reference's),
    ``max_abs_diff_shard_mean`` / ``max_abs_diff_shard_var`` (per-channel statistics
    of the first norm layer's input: shard vs whole batch), ``seconds``; per rank
    and training step: ``calls_per_step`` / ``bytes_per_step`` by tag (``"grad"``,
    ``"bn_forward"``, ``"bn_backward"``); per norm layer and step:
    ``norm_calls_per_layer_per_step`` / ``norm_bytes_per_layer_per_step`` (the BN
    statistics only); ``n_norm_layers``; and the raw ``per_rank`` records.
    """
    unknown = [n for n in norms if n not in DP_NORMS]
    if unknown or not norms:
        raise ValueError(f"expected norms from {sorted(DP_NORMS)}, got {list(norms)!r}")
    if world_size < 2 or batch_size % world_size or steps < 1:
        raise ValueError(
            "expected world_size >= 2, batch_size divisible by it and steps >= 1, "
            f"got world_size={world_size}, batch_size={batch_size}, steps={steps}"
        )
    if (batch_size // world_size) * seq_len < 2:
        raise ValueError(f"expected at least 2 tokens per rank, got {(batch_size // world_size) * seq_len}")
    import torch.multiprocessing as mp

    cfg = dict(steps=steps, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size, n_layer=n_layer,
               n_embd=n_embd, lr=lr, seed=seed, timeout_s=timeout_s)
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(world_size, free_port(), list(norms), cfg, out_dir), nprocs=world_size, join=True)
        per_rank = []
        for r in range(world_size):
            with open(os.path.join(out_dir, f"rank{r}.json")) as f:
                per_rank.append(json.load(f))
    return {norm: _summarize([pr[norm] for pr in per_rank], steps) for norm in norms}
