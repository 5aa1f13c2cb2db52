"""Chapter 1's experiment: data-parallel training on real processes (gloo, CPU).

``run_data_parallel`` spawns ``world_size`` processes; each trains the same tiny LM on
its shard of every batch, averages gradients with one all-reduce (what DDP does with
its buckets), times its steps, and compares its logits and gradients with a single
process that holds the whole batch. ``_worker`` and ``_compare`` are module-level so
``torch.multiprocessing.spawn`` can pickle them.

Example::

    stats = lu.run_data_parallel(("batch", "sync_batch", "layer"), world_size=2)
    stats["sync_batch"]["max_abs_err_output"], stats["sync_batch"]["step_s"]
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .distributed import (
    CollectiveCounter,
    all_reduce_counted,
    convert_sync_batchnorm,
    free_port,
)
from .models import TinyTransformer, TransformerConfig
from .norms import LayerNorm, TokenBatchNorm

__all__ = ["run_data_parallel", "DP_NORMS"]

#: What ``run_data_parallel`` compares: the variant and its single-process reference.
DP_NORMS = {
    "batch": "per-device BN: each rank normalizes its shard (ref.: full-batch BN)",
    "sync_batch": "SyncTokenBatchNorm (reference: full-batch TokenBatchNorm)",
    "layer": "LayerNorm (reference: LayerNorm)",
}


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).abs().max())


def _models(norm: str, cfg: dict) -> tuple[TinyTransformer, TinyTransformer]:
    """The single-process reference and this rank's copy (same weights everywhere)."""
    torch.manual_seed(cfg["seed"])
    tcfg = TransformerConfig(
        vocab_size=cfg["vocab_size"],
        block_size=cfg["seq_len"],
        n_layer=cfg["n_layer"],
        n_head=2,
        n_embd=cfg["n_embd"],
        norm="layer" if norm == "layer" else "batch",
    )
    ref = TinyTransformer(tcfg)
    dp = copy.deepcopy(ref)
    return ref, convert_sync_batchnorm(dp) if norm == "sync_batch" else dp


def _dp_step(
    dp: TinyTransformer, x: torch.Tensor, y: torch.Tensor, world: int
) -> torch.Tensor:
    """Forward and backward on this rank's shard; average the gradients (one bucket)."""
    logits = dp(x)  # (B / W, T, V)
    F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
    grads = [p.grad for p in dp.parameters()]
    bucket = all_reduce_counted(torch.cat([g.flatten() for g in grads]), "grad")
    offset = 0
    for g in grads:  # copy the averaged bucket back into every .grad
        g.copy_(bucket[offset : offset + g.numel()].view_as(g)).div_(world)
        offset += g.numel()
    return logits


def _compare(norm: str, rank: int, world: int, cfg: dict) -> dict:
    """One rank's side of the comparison for one norm kind (runs inside a worker)."""
    ref, dp = _models(norm, cfg)
    n_norm = sum(isinstance(m, (LayerNorm, TokenBatchNorm)) for m in dp.modules())
    seen: dict[str, torch.Tensor] = {}  # first norm's input: shard vs whole batch
    for key, model in (("full", ref), ("shard", dp)):
        model.blocks[0].norm1.register_forward_pre_hook(
            lambda m, a, key=key: seen.__setitem__(key, a[0].detach())
        )
    g = torch.Generator().manual_seed(cfg["seed"] + 1)  # same data on every rank
    b = cfg["batch_size"] // world
    shard = slice(rank * b, (rank + 1) * b)
    err = {"output": 0.0, "grad": 0.0, "shard_mean": 0.0, "shard_var": 0.0}
    step_s = []
    with CollectiveCounter() as counter:
        for _ in range(cfg["steps"]):
            V, B, T = cfg["vocab_size"], cfg["batch_size"], cfg["seq_len"]
            s = torch.randint(V, (B, T + 1), generator=g)
            x, y = s[:, :-1], s[:, 1:]
            ref_logits = ref(x)  # (B, T, V): one process, the whole batch
            F.cross_entropy(ref_logits.flatten(0, 1), y.flatten()).backward()
            dist.barrier()  # start the timed part together
            t0 = time.perf_counter()
            logits = _dp_step(dp, x[shard], y[shard], world)
            step_s.append(time.perf_counter() - t0)
            pairs = zip(dp.parameters(), ref.parameters())
            grad_err = max(_max_abs(p.grad, q.grad) for p, q in pairs)
            full, part = seen["full"].flatten(0, 1), seen["shard"].flatten(0, 1)
            dmean = _max_abs(part.mean(0), full.mean(0))
            dvar = _max_abs(part.var(0, unbiased=False), full.var(0, unbiased=False))
            err["output"] = max(err["output"], _max_abs(logits, ref_logits[shard]))
            err["grad"] = max(err["grad"], grad_err)
            err["shard_mean"] = max(err["shard_mean"], dmean)
            err["shard_var"] = max(err["shard_var"], dvar)
            with torch.no_grad():  # plain SGD (torch.optim's first use imports dynamo)
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
        "step_s": step_s,
    }


def _allreduce_latency(numel: int, reps: int) -> list[float]:
    """Seconds per blocking all-reduce of ``numel`` float32 numbers, ``reps`` times."""
    t = torch.zeros(numel)
    out = []
    for _ in range(reps):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(t)
        out.append(time.perf_counter() - t0)
    return out


def _worker(
    rank: int, world: int, port: int, norms: list[str], cfg: dict, out_dir: str
) -> None:
    """Entry point of one spawned process (module-level, so ``mp.spawn`` can pickle)."""
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):  # loopback, whatever the hostname resolves to
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=cfg["timeout_s"]),
    )
    try:
        result = {norm: _compare(norm, rank, world, cfg) for norm in norms}
        numel = world * (2 * cfg["n_embd"] + 1)  # one BN layer's exchange
        result["allreduce_s"] = _allreduce_latency(numel, cfg["latency_reps"])
        dist.barrier()
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def _summarize(per_rank: list[dict], steps: int, warmup: int) -> dict:
    """Worst case over ranks, collectives per step, and the median timed step."""
    r0 = per_rank[0]
    bn_calls = sum(v for k, v in r0["calls"].items() if k.startswith("bn_"))
    bn_bytes = sum(v for k, v in r0["bytes"].items() if k.startswith("bn_"))
    n = r0["n_norm_layers"]
    keys = (
        "max_abs_err_output",
        "max_abs_err_grad",
        "max_abs_diff_shard_mean",
        "max_abs_diff_shard_var",
    )
    out = {k: max(r[k] for r in per_rank) for k in keys}
    slowest = [max(r["step_s"][i] for r in per_rank) for i in range(warmup, steps)]
    out.update(
        n_norm_layers=n,
        calls_per_step={k: v / steps for k, v in r0["calls"].items()},
        bytes_per_step={k: v / steps for k, v in r0["bytes"].items()},
        norm_calls_per_layer_per_step=bn_calls / (n * steps),
        norm_bytes_per_layer_per_step=bn_bytes / (n * steps),
        step_s=slowest,
        median_step_s=statistics.median(slowest),
        per_rank=per_rank,
    )
    return out


def run_data_parallel(
    norms: Sequence[str] = ("batch", "sync_batch", "layer"),
    *,
    world_size: int = 2,
    steps: int = 3,
    warmup: int = 0,
    batch_size: int = 8,
    seq_len: int = 8,
    vocab_size: int = 16,
    n_layer: int = 1,
    n_embd: int = 16,
    lr: float = 0.1,
    seed: int = 0,
    latency_reps: int = 0,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Train a tiny LM data-parallel on ``world_size`` gloo processes; compare with one.

    Every rank builds the same ``TinyTransformer`` (seeded by ``seed``) and draws the
    same batches of random tokens; rank r trains on its contiguous shard of
    ``batch_size // world_size`` sequences, averaging gradients with one counted
    all-reduce, and also runs the single-process reference on the whole batch. Both
    take ``steps`` SGD steps. ``norms`` picks from ``DP_NORMS``.

    Returns ``{norm: stats}`` with the worst case over ranks and steps of
    ``max_abs_err_output`` (logits vs the reference's rows of the same examples),
    ``max_abs_err_grad``, ``max_abs_diff_shard_mean`` / ``max_abs_diff_shard_var``
    (first norm layer's input: shard vs whole batch); per rank and step
    ``calls_per_step`` / ``bytes_per_step`` by tag; per norm layer and step
    ``norm_calls_per_layer_per_step`` / ``norm_bytes_per_layer_per_step``;
    ``step_s`` (the slowest rank's seconds for each timed step after ``warmup``:
    shard forward, backward, gradient all-reduce) and ``median_step_s``. With
    ``latency_reps > 0`` the result also holds ``"allreduce_s"``: rank 0's seconds
    for each of ``latency_reps`` all-reduces the size of one BN layer's exchange.
    """
    unknown = [n for n in norms if n not in DP_NORMS]
    if unknown or not norms:
        raise ValueError(f"expected norms from {sorted(DP_NORMS)}, got {list(norms)!r}")
    if world_size < 2 or batch_size % world_size or steps < 1:
        raise ValueError(
            "expected world_size >= 2, batch_size divisible by it and steps >= 1, "
            f"got world_size={world_size}, batch_size={batch_size}, steps={steps}"
        )
    if not 0 <= warmup < steps or latency_reps < 0:
        raise ValueError(
            f"expected 0 <= warmup < steps and latency_reps >= 0, got warmup={warmup},"
            f" steps={steps}, latency_reps={latency_reps}"
        )
    if (batch_size // world_size) * seq_len < 2:
        n_tok = (batch_size // world_size) * seq_len
        raise ValueError(f"expected at least 2 tokens per rank, got {n_tok}")
    import torch.multiprocessing as mp

    cfg = dict(
        steps=steps,
        batch_size=batch_size,
        seq_len=seq_len,
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_embd=n_embd,
        lr=lr,
        seed=seed,
        timeout_s=timeout_s,
        latency_reps=latency_reps,
    )
    args = (world_size, free_port(), list(norms), cfg)
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(*args, out_dir), nprocs=world_size, join=True)
        per_rank = []
        for r in range(world_size):
            with open(os.path.join(out_dir, f"rank{r}.json")) as f:
                per_rank.append(json.load(f))
    out: dict[str, Any] = {
        n: _summarize([pr[n] for pr in per_rank], steps, warmup) for n in norms
    }
    if latency_reps:
        out["allreduce_s"] = per_rank[0]["allreduce_s"]
    return out
