"""Timing helpers: CPU-time medians, interleaved samples, cache sizes, malloc reuse."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["cache_sizes", "keep_freed_memory", "median_time", "interleaved_times"]


def cache_sizes(cpu: int = 0) -> dict[str, int]:
    """This machine's CPU cache sizes in bytes, read from Linux's sysfs.

    Keys like ``"L1d"``, ``"L2"``, ``"L3"``; an empty dict where sysfs is missing
    (macOS, Windows). The largest value is the last-level cache.
    """
    out: dict[str, int] = {}
    for d in sorted(Path(f"/sys/devices/system/cpu/cpu{cpu}/cache").glob("index*")):
        try:
            level, kind = (d / "level").read_text().strip(), (d / "type").read_text()
            size = (d / "size").read_text().strip()
        except OSError:
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        nbytes = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        suffix = {"Data": "d", "Instruction": "i"}.get(kind.strip(), "")
        out[f"L{level}{suffix}"] = nbytes
    return out


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[bool]:
    """Inside the block, glibc reuses freed memory instead of returning it to the OS.

    Eager PyTorch allocates a fresh output on every call. glibc serves large
    allocations with new ``mmap`` pages, which the kernel must zero on first touch:
    timing a norm on 512 MiB then times the page zeroing more than the norm. With
    ``mallopt(M_MMAP_MAX, 0)`` and no trimming, a freed block is reused, as a GPU
    caching allocator does. Yields False (and changes nothing) without glibc.
    The memory kept is handed back with ``malloc_trim`` on exit.
    """
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        yield False
        return
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # from glibc's malloc.h
    ok = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, 2**30)
    )
    try:
        yield ok
    finally:
        libc.mallopt(M_MMAP_MAX, 65536)  # glibc's defaults
        libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)


def _check_callable(*fns: Any) -> None:
    for f in fns:
        if not callable(f):
            raise ValueError(f"expected a callable, got {type(f).__name__}")


def _check_repeats(repeats: Any) -> None:
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"expected repeats to be a positive int, got {repeats!r}")


def _calls_per_timing(fn: Callable[[], Any], min_seconds: float) -> int:
    t0 = time.process_time()
    fn()  # warm-up, and a first estimate of the call's time
    return max(1, int(min_seconds / max(time.process_time() - t0, 1e-9)))


def _one_timing(fn: Callable[[], Any], number: int) -> float:
    t0 = time.process_time()
    for _ in range(number):
        fn()
    return (time.process_time() - t0) / number


def median_time(
    fn: Callable[[], Any], repeats: int = 5, min_seconds: float = 2e-3
) -> float:
    """Median time of one call of ``fn()``, in seconds of this process's CPU time.

    One warm-up call, then ``repeats`` timings, each of enough back-to-back calls to
    last at least ``min_seconds``. The clock is ``time.process_time`` (user + system
    CPU time of this process): time during which the OS runs another process
    instead of this one is not counted, but contention while this one runs (for
    the shared cache and memory bandwidth, with programs on other cores) still
    slows it. Call ``torch.set_num_threads(1)`` first.
    """
    _check_callable(fn)
    _check_repeats(repeats)
    number = _calls_per_timing(fn, min_seconds)
    return statistics.median(_one_timing(fn, number) for _ in range(repeats))


def interleaved_times(
    fns: dict[Any, Callable[[], Any]],
    repeats: int = 5,
    best_of: int = 3,
    min_seconds: float = 2e-3,
) -> dict[Any, list[float]]:
    """``repeats`` samples of the time of one call of each function, interleaved.

    Within a sample every function is timed ``best_of`` times, in an order that
    rotates from round to round, and the sample is the minimum: contention, which
    only ever adds time, is cut by the minimum, and a change of the machine's state
    between samples affects every function alike, so ratios of the samples (to a
    copy, say) are stable. Times are seconds of this process's CPU time, as in
    ``median_time``: that leaves out time when the OS runs another program, not
    contention for the cache and memory bandwidth while this one runs. Make each
    function reset what it accumulates (``x.grad = None``) so every call does the
    same work.
    """
    if not isinstance(fns, dict) or not fns:
        raise ValueError(f"expected a non-empty dict of callables, got {fns!r}")
    _check_callable(*fns.values())
    _check_repeats(repeats)
    _check_repeats(best_of)
    names = list(fns)
    number = {k: _calls_per_timing(fns[k], min_seconds) for k in names}
    out: dict[Any, list[float]] = {k: [] for k in names}
    for i in range(repeats):
        best = dict.fromkeys(names, float("inf"))
        for j in range(best_of):
            shift = (i * best_of + j) % len(names)
            for k in names[shift:] + names[:shift]:
                best[k] = min(best[k], _one_timing(fns[k], number[k]))
        for k in names:
            out[k].append(best[k])
    return out
