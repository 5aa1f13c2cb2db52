"""Memory accounting: what autograd keeps alive for the backward pass, and timing helpers to read it as bandwidth."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "saved_tensor_bytes",
    "SAVED_CATEGORIES",
    "saved_tensor_breakdown",
    "saved_bytes_formula",
    "written_bytes",
    "median_time",
    "time_ratio",
]


def saved_tensor_bytes(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Bytes of every distinct storage autograd saves for backward while ``fn`` runs.

    Parameters and buffers that an op saves count too. Views of one storage (an
    input and its transpose, say) are counted once, at the storage's full size.

    Example:
        >>> x = torch.randn(8, 64, 128, requires_grad=True)
        >>> saved_tensor_bytes(torch.nn.LayerNorm(128), x)  # input + 2 stats/token + weight + bias
        267264
    """
    if not callable(fn):
        raise ValueError(f"expected a callable fn, got {type(fn).__name__}")
    storages: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[(s.data_ptr(), s.nbytes())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args, **kwargs)
    return sum(storages.values())


#: What a saved storage is, in ``saved_tensor_breakdown`` (and ``saved_bytes_formula``).
SAVED_CATEGORIES = ("input", "intermediates", "statistics", "parameters", "buffers")


def saved_tensor_breakdown(module: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> dict[str, int]:
    """``saved_tensor_bytes(module, x, *args)`` split into ``SAVED_CATEGORIES``.

    Each distinct saved storage is, in this order of checks:

    * ``input``: the storage of ``x`` (a transposed view of it included);
    * ``parameters`` / ``buffers``: the storage of one of ``module``'s parameters / buffers;
    * ``intermediates``: any other storage at least as large as ``x``'s (full-size
      tensors that an unfused, plain-ops implementation keeps);
    * ``statistics``: everything smaller (per-token or per-channel statistics, masks).

    Parameters and buffers live in the module anyway; the first three categories are
    what the layer adds to the memory held between forward and backward.

    Example:
        >>> x = torch.randn(8, 64, 128, requires_grad=True)
        >>> saved_tensor_breakdown(torch.nn.LayerNorm(128), x)["statistics"]  # mean and rstd per token
        4096
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"expected an nn.Module, got {type(module).__name__}")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected x to be a torch.Tensor, got {type(x).__name__}")
    key = lambda t: (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())  # noqa: E731
    params = {key(p) for p in module.parameters()}
    buffers = {key(b) for b in module.buffers()}
    x_key, saved = key(x), {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[key(t)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x, *args, **kwargs)
    out = dict.fromkeys(SAVED_CATEGORIES, 0)
    for k, nbytes in saved.items():
        if k == x_key:
            out["input"] += nbytes
        elif k in params or k in buffers:
            out["parameters" if k in params else "buffers"] += nbytes
        else:
            out["intermediates" if nbytes >= x_key[1] else "statistics"] += nbytes
    return out


def saved_bytes_formula(kind: str, B: int, T: int, C: int, bytes_per_value: int = 4) -> dict[str, int]:
    """Closed-form ``saved_tensor_breakdown`` of ``make_norm(kind, C)`` in training mode.

    For a (B, T, C) input that requires grad, values of ``bytes_per_value`` bytes
    (4: float32), PyTorch 2.x on the CPU. With N = B*T*C:

    * ``"layer"``: input N; statistics 2*B*T (mean and 1/std per token); parameters 2*C.
    * ``"batch"``: input N; statistics 2*C (mean and 1/std per channel); parameters C
      (the weight; the bias is not needed for backward); buffers 2*C (the running
      mean and variance are arguments of the fused kernel, so autograd keeps them).
    * ``"masked_batch"`` with a padding mask (``lu.MaskedBatchNorm``'s autograd
      function on the BatchNorm kernel): intermediates N (x with pads replaced by
      the real mean); statistics 2*C (mean and 1/std) + B*T (real-token weights);
      parameters C. Without a mask it saves what ``"batch"`` saves.
    * ``"rms"`` (``lu.RMSNorm``; ``nn.RMSNorm`` on the CPU saves the same): input N;
      intermediates N (x / rms, before the weight); statistics B*T (1/rms); parameters C.
    * ``"none"``: nothing.

    Needs C >= 2 (with C = 1 a per-token statistic is as large as x and counts as
    an intermediate). Returns bytes per category of ``SAVED_CATEGORIES``.
    """
    for name, v in (("B", B), ("T", T), ("C", C), ("bytes_per_value", bytes_per_value)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"expected {name} to be a positive int, got {v!r}")
    N, BT, b = B * T * C, B * T, bytes_per_value
    values = {
        "layer": {"input": N, "statistics": 2 * BT, "parameters": 2 * C},
        "batch": {"input": N, "statistics": 2 * C, "parameters": C, "buffers": 2 * C},
        "masked_batch": {"intermediates": N, "statistics": 2 * C + BT, "parameters": C},
        "rms": {"input": N, "intermediates": N, "statistics": BT, "parameters": C},
        "none": {},
    }
    if kind not in values:
        raise ValueError(f"unknown norm kind {kind!r}; expected one of {sorted(values)}")
    out = dict.fromkeys(SAVED_CATEGORIES, 0)
    out.update({k: v * b for k, v in values[kind].items()})
    return out


class _WrittenBytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        flat_in = torch.utils._pytree.tree_leaves((args, kwargs))
        seen = {t.untyped_storage().data_ptr() for t in flat_in if isinstance(t, torch.Tensor)}
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                seen.add(t.untyped_storage().data_ptr())  # views and in-place results share an input's storage
                self.total += t.untyped_storage().nbytes()
        return out


def written_bytes(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Bytes of the new tensors that the ops inside ``fn`` allocate and write.

    Views and in-place results are not counted (they write no new storage). Run it
    under ``torch.no_grad()`` to count what one inference pass writes.

    Example:
        >>> with torch.no_grad():
        ...     written_bytes(torch.nn.Linear(4, 8), torch.randn(2, 4))  # one (2, 8) float32 output
        64
    """
    if not callable(fn):
        raise ValueError(f"expected a callable fn, got {type(fn).__name__}")
    with _WrittenBytes() as mode:
        fn(*args, **kwargs)
    return mode.total


def median_time(fn: Callable[[], Any], repeats: int = 5, min_seconds: float = 2e-3) -> float:
    """Median time of one call of ``fn()``, in seconds of this process's CPU time.

    One warm-up call, then ``repeats`` timings, each of enough back-to-back calls to
    last at least ``min_seconds``. The clock is ``time.process_time`` (user + system
    CPU time of this process), not the wall clock: on a shared machine, time the OS
    gives to other processes is not counted. Call ``torch.set_num_threads(1)`` first,
    so that this is the time of the one thread doing the work.
    """
    if not callable(fn):
        raise ValueError(f"expected a callable fn, got {type(fn).__name__}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"expected repeats to be a positive int, got {repeats!r}")
    t0 = time.process_time()
    fn()  # warm-up, and a first estimate of the call's time
    number = max(1, int(min_seconds / max(time.process_time() - t0, 1e-9)))
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(number):
            fn()
        times.append((time.process_time() - t0) / number)
    return statistics.median(times)


def time_ratio(fn: Callable[[], Any], baseline: Callable[[], Any], repeats: int = 7, min_seconds: float = 2e-3) -> float:
    """Median over ``repeats`` of (time of ``fn()``) / (time of ``baseline()``), timed back to back.

    Times are CPU time of this process, as in ``median_time``. The two are timed
    alternately (in swapped order every other repeat), so a change in the machine's
    state during the measurement (caches, memory traffic of other processes) affects
    both alike: a ratio is far more stable than two separate medians.
    """
    if not (callable(fn) and callable(baseline)):
        raise ValueError(f"expected two callables, got {type(fn).__name__} and {type(baseline).__name__}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"expected repeats to be a positive int, got {repeats!r}")
    number = {}
    for f in (fn, baseline):  # warm-up, and how many calls make one timing last min_seconds
        t0 = time.process_time()
        f()
        number[f] = max(1, int(min_seconds / max(time.process_time() - t0, 1e-9)))

    def one(f: Callable[[], Any]) -> float:
        t0 = time.process_time()
        for _ in range(number[f]):
            f()
        return (time.process_time() - t0) / number[f]

    ratios = []
    for i in range(repeats):
        if i % 2:
            tb, ta = one(baseline), one(fn)
        else:
            ta, tb = one(fn), one(baseline)
        ratios.append(ta / tb)
    return statistics.median(ratios)
