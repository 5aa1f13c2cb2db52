"""Chapter 4's saved-bytes and bandwidth measurements on a CUDA GPU.

    python benchmarks/gpu_memory.py --out book/data/gpu_measurements.json
    python benchmarks/gpu_memory.py --device cpu --small   # a dry run of the code paths

Without a GPU (and without ``--device cpu``) it prints why and exits 0, so it can sit in
any CI. On a GPU it records, with the device name, torch version and date:

* the activation memory each norm saves for backward (``lu.saved_tensor_breakdown``) in
  float32 and bfloat16: on CUDA, LayerNorm keeps fp32 statistics for a bf16 input, and
  ``nn.RMSNorm`` may be a fused kernel;
* each norm's time in passes over x at the speed of a copy (``x.clone()``), forward and
  forward + backward, at sizes around the GPU's L2 cache, against the bounds of
  ``lu.min_traffic`` (LN 2N / 5N, train-mode BN 3N / 8N).

The chapter prints the JSON file when it is committed at ``book/data/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import lnbn_utils as lu  # noqa: E402

NORMS = {  # label: (constructor(C, dtype, device), kind in lu.min_traffic)
    "LayerNorm": (lambda c, **kw: nn.LayerNorm(c, **kw), "layer"),
    "BatchNorm, train": (lambda c, **kw: nn.BatchNorm1d(c, **kw), "batch"),
    "BatchNorm, eval": (lambda c, **kw: nn.BatchNorm1d(c, **kw).eval(), "batch_eval"),
    "nn.RMSNorm": (lambda c, **kw: nn.RMSNorm(c, **kw), "rms"),
}


def saved_bytes(device: str, shape: tuple[int, int, int]) -> dict:
    """Saved-for-backward bytes by category, per norm and dtype, on ``device``."""
    B, T, C = shape
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(B * T, C, device=device, dtype=dtype, requires_grad=True)
        for label, (build, _) in NORMS.items():
            layer = build(C, device=device, dtype=dtype)
            parts = lu.saved_tensor_breakdown(layer, x)
            out[f"{label}, {str(dtype).removeprefix('torch.')}"] = parts
    return out


def _timer(device: str):
    if device == "cuda":

        def run(fn, repeats: int) -> float:
            fn()  # warm-up
            times = []
            for _ in range(repeats):
                start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            return statistics.median(times)

        return run
    return lambda fn, repeats: lu.median_time(fn, repeats)


def _one_size(device: str, tokens: int, C: int, repeats: int) -> dict:
    timed = _timer(device)
    x = torch.randn(tokens, C, device=device)  # (B*T, C) float32
    dy = torch.randn_like(x)
    xg = x.clone().requires_grad_(True)
    t_copy = timed(lambda: x.clone(), repeats)
    row = {"copy GB/s": 8 * x.numel() / t_copy / 1e9}
    for label, (build, kind) in NORMS.items():
        layer = build(C, device=device)
        with torch.no_grad():
            t = timed(lambda: layer(x), repeats)
        row[f"{label} forward"] = {
            "passes": 2 * t / t_copy,
            "bound": lu.min_traffic(kind),
        }
        if kind == "batch_eval":
            continue

        def fwd_bwd():
            xg.grad = None  # no gradient accumulation between timed calls
            layer.zero_grad(set_to_none=True)
            layer(xg).backward(dy)

        t = timed(fwd_bwd, repeats)
        bound = lu.min_traffic(kind, backward=True)
        row[f"{label} fwd+bwd"] = {"passes": 2 * t / t_copy, "bound": bound}
    return row


def bandwidth(
    device: str, mib_sizes: list[int], C: int = 1024, repeats: int = 10
) -> dict:
    """Per size: copy GB/s and each norm's time in passes over x (copy = 2 passes)."""
    out = {}
    for mib in mib_sizes:
        out[f"{mib} MiB"] = _one_size(device, mib * 2**20 // (4 * C), C, repeats)
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="JSON file to write")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--small", action="store_true", help="tiny sizes (a dry run)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("No CUDA device: nothing to measure (use --device cpu for a dry run).")
        return 0
    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_num_threads(1)
        name = "CPU (dry run)"
    else:
        name = torch.cuda.get_device_name()
    sizes = [1, 4] if args.small else [16, 64, 256, 1024, 4096]
    result = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "saved_bytes_shape_BTC": [8, 1024, 1024],
        "saved_bytes": saved_bytes(
            args.device, (8, 64, 128) if args.small else (8, 1024, 1024)
        ),
        "bandwidth_C": 1024,
        "bandwidth": bandwidth(args.device, sizes),
    }
    if args.small:
        result["saved_bytes_shape_BTC"] = [8, 64, 128]
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
