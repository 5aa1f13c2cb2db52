"""Memory accounting: what autograd keeps for the backward pass; time ratios."""

from __future__ import annotations

import statistics
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from .timing import (  # noqa: F401  (kept importable from here)
    _check_callable,
    cache_sizes,
    interleaved_times,
    keep_freed_memory,
    median_time,
)

__all__ = [
    "saved_tensor_bytes",
    "SAVED_CATEGORIES",
    "ACTIVATION_CATEGORIES",
    "saved_tensor_breakdown",
    "activation_bytes",
    "saved_bytes_formula",
    "written_bytes",
    "min_traffic",
    "time_ratios",
    "time_ratio",
]


def saved_tensor_bytes(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Bytes of every distinct storage autograd saves for backward while ``fn`` runs.

    Parameters and buffers that an op saves count too. Views of one storage (an
    input and its transpose, say) are counted once, at the storage's full size.

    Example:
        >>> x = torch.randn(8, 64, 128, requires_grad=True)
        >>> # input + 2 statistics per token + weight + bias
        >>> saved_tensor_bytes(torch.nn.LayerNorm(128), x)
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
#: The categories that are activation memory: held only between forward and backward.
#: Parameters and buffers are saved by reference; they live in the model anyway.
ACTIVATION_CATEGORIES = ("input", "intermediates", "statistics")


def saved_tensor_breakdown(
    module: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any
) -> dict[str, int]:
    """``saved_tensor_bytes(module, x, *args)`` split into ``SAVED_CATEGORIES``.

    Each distinct saved storage is, in this order of checks:

    * ``input``: the storage of ``x`` (a transposed view of it included);
    * ``parameters`` / ``buffers``: the storage of a parameter / buffer of ``module``;
    * ``intermediates``: any other tensor with a value per token and channel (its
      last dimension is C and it has more than C values: full-size tensors that an
      unfused implementation keeps, or a copy of the real tokens);
    * ``statistics``: everything else (per-token or per-channel statistics, masks,
      indices).

    Parameters and buffers live in the module anyway; the first three categories are
    what the layer adds to the memory held between forward and backward.

    Example:
        >>> x = torch.randn(8, 64, 128, requires_grad=True)
        >>> # mean and 1/std per token
        >>> saved_tensor_breakdown(torch.nn.LayerNorm(128), x)["statistics"]
        4096
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"expected an nn.Module, got {type(module).__name__}")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected x to be a torch.Tensor, got {type(x).__name__}")

    def key(t: torch.Tensor) -> tuple[int, int]:
        return t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()

    params = {key(p) for p in module.parameters()}
    buffers = {key(b) for b in module.buffers()}
    x_key, saved = key(x), {}

    C = x.shape[-1]

    def pack(t: torch.Tensor) -> torch.Tensor:
        per_value = t.dim() >= 2 and t.shape[-1] == C and t.numel() > C
        saved[key(t)] = (t.untyped_storage().nbytes(), per_value)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x, *args, **kwargs)
    out = dict.fromkeys(SAVED_CATEGORIES, 0)
    for k, (nbytes, per_value) in saved.items():
        if k == x_key:
            out["input"] += nbytes
        elif k in params or k in buffers:
            out["parameters" if k in params else "buffers"] += nbytes
        else:
            out["intermediates" if per_value else "statistics"] += nbytes
    return out


def saved_bytes_formula(
    kind: str,
    B: int,
    T: int,
    C: int,
    bytes_per_value: int = 4,
    n_real: Optional[int] = None,
) -> dict[str, int]:
    """Closed-form ``saved_tensor_breakdown`` of ``make_norm(kind, C)``, training mode.

    For a (B, T, C) input that requires grad, values of ``bytes_per_value`` bytes
    (4: float32), PyTorch 2.x on the CPU. With N = B*T*C:

    * ``"layer"``: input N; statistics 2*B*T (mean and 1/std per token); parameters 2*C.
    * ``"batch"``: input N; statistics 2*C (mean and 1/std per channel); parameters C
      (the weight; the bias is not needed for backward); buffers 2*C (the running
      mean and variance are arguments of the fused kernel, so autograd keeps them).
    * ``"masked_batch"`` (``lu.MaskedBatchNorm``'s autograd function on the
      BatchNorm kernel) with ``n_real`` real tokens (default B*T: no pads):
      intermediates n_real*C (the real tokens, shifted); statistics 2*C (mean and
      1/std), plus, when there are pads, the int64 indices of the B*T real and pad
      rows (8*B*T bytes); parameters C.
    * ``"rms"`` (``lu.RMSNorm``; ``nn.RMSNorm`` on the CPU saves the same): input N;
      intermediates N (x / rms, before the weight); statistics B*T (1/rms);
      parameters C.
    * ``"none"``: nothing.

    Needs C >= 2 (with C = 1 a per-token statistic is as large as x and counts as
    an intermediate). Returns bytes per category of ``SAVED_CATEGORIES``.
    """
    for name, v in (("B", B), ("T", T), ("C", C), ("bytes_per_value", bytes_per_value)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"expected {name} to be a positive int, got {v!r}")
    N, BT, b = B * T * C, B * T, bytes_per_value
    n = BT if n_real is None else n_real
    if not isinstance(n, int) or not 2 <= n <= BT:
        raise ValueError(f"expected n_real an int in 2..B*T={BT}, got {n_real!r}")
    values = {
        "layer": {"input": N, "statistics": 2 * BT, "parameters": 2 * C},
        "batch": {"input": N, "statistics": 2 * C, "parameters": C, "buffers": 2 * C},
        "masked_batch": {"intermediates": n * C, "statistics": 2 * C, "parameters": C},
        "rms": {"input": N, "intermediates": N, "statistics": BT, "parameters": C},
        "none": {},
    }
    if kind not in values:
        raise ValueError(
            f"unknown norm kind {kind!r}; expected one of {sorted(values)}"
        )
    out = dict.fromkeys(SAVED_CATEGORIES, 0)
    out.update({k: v * b for k, v in values[kind].items()})
    if kind == "masked_batch" and n < BT:
        out["statistics"] += 8 * BT  # int64 indices of the real and the pad rows
    return out


class _WrittenBytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore
        out = func(*args, **(kwargs or {}))
        flat_in = torch.utils._pytree.tree_leaves((args, kwargs))
        seen = {
            t.untyped_storage().data_ptr()
            for t in flat_in
            if isinstance(t, torch.Tensor)
        }
        for t in torch.utils._pytree.tree_leaves(out):
            if (
                isinstance(t, torch.Tensor)
                and t.untyped_storage().data_ptr() not in seen
            ):
                seen.add(
                    t.untyped_storage().data_ptr()
                )  # views and in-place results share an input's storage
                self.total += t.untyped_storage().nbytes()
        return out


def written_bytes(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Bytes of the new tensors that the ops inside ``fn`` allocate and write.

    Views and in-place results are not counted (they write no new storage). Run it
    under ``torch.no_grad()`` to count what one inference pass writes.

    Example:
        >>> with torch.no_grad():
        ...     # one (2, 8) float32 output
        ...     written_bytes(torch.nn.Linear(4, 8), torch.randn(2, 4))
        64
    """
    if not callable(fn):
        raise ValueError(f"expected a callable fn, got {type(fn).__name__}")
    with _WrittenBytes() as mode:
        fn(*args, **kwargs)
    return mode.total


def activation_bytes(
    module: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any
) -> int:
    """Activation memory that ``module(x, *args)`` holds for backward, in bytes.

    The ``ACTIVATION_CATEGORIES`` of ``saved_tensor_breakdown``: inputs, intermediates
    and statistics; parameters and buffers, saved by reference, are left out. For a
    whole model (``x`` the token ids) this is what a micro-batch adds to memory
    until its backward pass.
    """
    parts = saved_tensor_breakdown(module, x, *args, **kwargs)
    return sum(parts[k] for k in ACTIVATION_CATEGORIES)


#: Fewest values per element of x that each layer must move to or from memory once x
#: no longer fits in the cache: (forward, forward + backward). See ``min_traffic``.
_MIN_TRAFFIC = {
    "copy": (2, 2),  # read x, write y
    "layer": (2, 5),  # fwd: read x, write y; bwd: read x, dy, write dx
    "rms": (2, 5),  # as LayerNorm: per-token statistics are computed in cache
    "batch_eval": (2, 5),  # a fixed per-channel affine map
    "batch": (3, 8),  # fwd: read x (stats), read x, write y; bwd: read x, dy (sums),
    #                   read x, dy, write dx
}


def min_traffic(kind: str, backward: bool = False, fits_in_cache: bool = False) -> int:
    """Least number of N-element passes over memory for a norm on N elements.

    A per-token norm (``"layer"``, ``"rms"``) normalizes each token from its own C
    values, which fit in the cache: forward reads x and writes y (2N), backward
    reads x and dy and writes dx (3N more). Train-mode BatchNorm (``"batch"``)
    must reduce over the whole batch before it can normalize a single value: one
    extra read of x forward, and one extra read of x and dy backward (for the
    sums of dy and dy * x_hat), 3N and 8N in all. When x fits in the cache
    (``fits_in_cache=True``) the second read is a cache hit and BN's bound
    falls to LN's. Bytes are this times N times the bytes per value.
    """
    if kind not in _MIN_TRAFFIC:
        raise ValueError(
            f"unknown kind {kind!r}; expected one of {sorted(_MIN_TRAFFIC)}"
        )
    fwd, both = _MIN_TRAFFIC["layer" if fits_in_cache and kind != "copy" else kind]
    return both if backward else fwd


def time_ratios(
    fn: Callable[[], Any],
    baseline: Callable[[], Any],
    repeats: int = 7,
    min_seconds: float = 2e-3,
    best_of: int = 1,
) -> list[float]:
    """``repeats`` samples of time(``fn()``) / time(``baseline()``), interleaved.

    The two are timed back to back, in alternating order, ``best_of`` times per
    sample, and the sample is the ratio of the minima (``interleaved_times``).
    Take a median, or a bootstrap interval, of the samples.
    """
    _check_callable(fn, baseline)
    t = interleaved_times({"fn": fn, "base": baseline}, repeats, best_of, min_seconds)
    return [a / b for a, b in zip(t["fn"], t["base"])]


def time_ratio(
    fn: Callable[[], Any],
    baseline: Callable[[], Any],
    repeats: int = 7,
    min_seconds: float = 2e-3,
) -> float:
    """Median of ``time_ratios(fn, baseline, repeats, min_seconds)``."""
    return statistics.median(time_ratios(fn, baseline, repeats, min_seconds))
