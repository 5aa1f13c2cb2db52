"""Speed of the book's norms against PyTorch's kernels: ``make bench`` (not a test).

Two measurements, one thread, float32, forward + backward with gradients reset
between calls:

1. Ratios at (B, T, C) = (16, 128, 256): every norm's time over ``F.batch_norm`` on
   the (B*T, C) matrix (``MaskedBatchNorm`` with a padding mask: target 1.5x) and
   over ``nn.LayerNorm`` (``RMSNorm``: target 2x). All candidates run once per round
   in a fresh random order and the ratios are taken per round, so a busy machine
   slows all alike; the median over rounds is printed. Times are the thread's CPU
   time (``time.thread_time``), which leaves out the time a loaded machine gives to
   other processes.
2. Fraction of copy bandwidth at a size beyond the last-level cache: a forward +
   backward pass must at least read x and write y, then read x and the output
   gradient and write dx (5 tensors of x's size). That traffic at the bandwidth of
   ``torch.Tensor.copy_`` (read + write, 2 tensors) is the floor; the fraction is
   floor / measured time (1.0 = as fast as copying).

Run: ``PYTHONPATH=src python benchmarks/norms.py [--rounds 30] [--big-mib 600]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

import lnbn_utils as lu


def llc_bytes() -> int:
    """Size of the largest CPU cache (Linux sysfs), or 32 MiB when unknown."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip()
        mult = {"K": 1024, "M": 1024**2}.get(text[-1], 1)
        sizes.append(int(text.rstrip("KM")) * mult)
    return max(sizes, default=32 * 1024**2)


def make_case(B: int, T: int, C: int, seed: int = 0) -> dict:
    """Input, output gradient and a right-padding mask (lengths uniform in 9T/16..T)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, C, generator=g).requires_grad_()
    lengths = torch.randint(T * 9 // 16, T + 1, (B,), generator=g)  # ~22% pads
    mask = lu.lengths_to_padding_mask(lengths, T)
    return dict(x=x, gy=torch.randn(B, T, C, generator=g), mask=mask)


def candidates(
    C: int, mask: torch.Tensor
) -> dict[str, tuple[nn.Module | None, Callable]]:
    """label -> (module or None, fn(x)); the first is the reference."""
    w = nn.Parameter(torch.ones(C))
    b = nn.Parameter(torch.zeros(C))
    rm, rv = torch.zeros(C), torch.ones(C)

    def ref(x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        flat = x.reshape(B * T, C)  # channels second for F.batch_norm: (B*T, C)
        return F.batch_norm(flat, rm, rv, w, b, True, 0.1, 1e-5).view(B, T, C)

    ref_mod = nn.ParameterList([w, b])
    tbn, mbn, mbn0 = lu.TokenBatchNorm(C), lu.MaskedBatchNorm(C), lu.MaskedBatchNorm(C)
    ln, lln, rms = nn.LayerNorm(C), lu.LayerNorm(C), lu.RMSNorm(C)
    rms_cf = lu.RMSNorm(C, closed_form=True)
    return {
        "F.batch_norm (B*T, C)": (ref_mod, ref),
        "lu.TokenBatchNorm": (tbn, tbn),
        "lu.MaskedBatchNorm, mask": (mbn, lambda x: mbn(x, mask)),
        "lu.MaskedBatchNorm, no mask": (mbn0, mbn0),
        "nn.LayerNorm": (ln, ln),
        "lu.LayerNorm": (lln, lln),
        "lu.RMSNorm": (rms, rms),
        "lu.RMSNorm, closed_form": (rms_cf, rms_cf),
    }


def fwd_bwd(
    mod: nn.Module | None, fn: Callable, x: torch.Tensor, gy: torch.Tensor
) -> float:
    """CPU seconds of this thread for one forward + backward, gradients reset first."""
    x.grad = None
    if mod is not None:
        mod.zero_grad(set_to_none=True)
    t0 = time.thread_time()
    fn(x).backward(gy)
    return time.thread_time() - t0


def ratios(
    shape: tuple[int, int, int], rounds: int
) -> dict[str, tuple[float, float, float]]:
    """label -> (median seconds, median per-round ratios to F.batch_norm and LN).

    Every round times each candidate once, in a fresh random order, so slow spells
    of a shared machine fall on all of them alike.
    """
    case = make_case(*shape)
    cands = candidates(shape[2], case["mask"])
    ref_label = next(iter(cands))
    times: dict[str, list[float]] = {k: [] for k in cands}
    rel: dict[str, list[float]] = {k: [] for k in cands}
    rel_ln: dict[str, list[float]] = {k: [] for k in cands}
    order = list(cands)
    rng = random.Random(0)
    for r in range(rounds + 3):  # 3 warm-up rounds
        rng.shuffle(order)
        t = {k: fwd_bwd(*cands[k], case["x"], case["gy"]) for k in order}
        if r >= 3:
            for k in cands:
                times[k].append(t[k])
                rel[k].append(t[k] / t[ref_label])
                rel_ln[k].append(t[k] / t["nn.LayerNorm"])
    med = statistics.median
    return {k: (med(times[k]), med(rel[k]), med(rel_ln[k])) for k in cands}


def copy_bandwidth(x: torch.Tensor, reps: int) -> float:
    """Bytes per second of ``out.copy_(x)`` (read + write), median over reps."""
    out = torch.empty_like(x)
    ts = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        out.copy_(x)
        ts.append(time.perf_counter() - t0)
    return 2 * x.numel() * x.element_size() / statistics.median(ts[1:])


def bandwidth_fractions(big_bytes: int, reps: int) -> tuple[tuple[int, ...], dict]:
    C, T = 1024, 512
    B = max(1, big_bytes // (4 * T * C))
    case = make_case(B, T, C)
    x, gy = case["x"], case["gy"]
    bw = copy_bandwidth(x.detach(), reps)
    floor = 5 * x.numel() * 4 / bw  # seconds to move 5 tensors of x's size
    out = {}
    for label, (mod, fn) in candidates(C, case["mask"]).items():
        ts = [fwd_bwd(mod, fn, x, gy) for _ in range(reps + 1)][1:]
        out[label] = (statistics.median(ts), floor / statistics.median(ts))
    return (B, T, C), {"copy GB/s": bw / 1e9, **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--big-mib", type=int, default=0, help="0: 2x the LLC, <= 1 GiB"
    )
    parser.add_argument("--big-reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    shape = (16, 128, 256)
    case = make_case(*shape)
    pad = float(case["mask"].float().mean())
    print(f"torch {torch.__version__}, 1 thread, float32, forward + backward")
    print(f"\n1. (B, T, C) = {shape}, {pad:.0%} pads, median of {args.rounds} rounds")
    print(f"{'':30s}{'ms':>8s}{'x F.bn':>8s}{'x LN':>8s}")
    for label, (t, r, r_ln) in ratios(shape, args.rounds).items():
        print(f"{label:30s}{t * 1e3:8.2f}{r:8.2f}{r_ln:8.2f}")
    llc = llc_bytes()
    big = args.big_mib * 2**20 if args.big_mib else min(2 * llc, 2**30)
    big_shape, fr = bandwidth_fractions(big, args.big_reps)
    size_mib = big_shape[0] * big_shape[1] * big_shape[2] * 4 / 2**20
    print(
        f"\n2. (B, T, C) = {big_shape} ({size_mib:.0f} MiB, LLC {llc / 2**20:.0f} MiB)"
    )
    print(f"copy bandwidth {fr.pop('copy GB/s'):.1f} GB/s (read + write)")
    print(f"{'':30s}{'ms':>8s}{'of copy bw':>12s}")
    for label, (t, f) in fr.items():
        print(f"{label:30s}{t * 1e3:8.1f}{f:12.2f}")


if __name__ == "__main__":
    main()
