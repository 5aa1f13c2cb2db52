"""Norm inventory: the normalization layers of a model, by type or by behaviour."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..norms import BATCHNORM_CLASSES
from ..train import evaluating
from .inputs import _rel

__all__ = ["norm_inventory", "KNOWN_NORMS"]

_BATCH_NORMS = tuple(c for c in BATCHNORM_CLASSES if c is not nn.SyncBatchNorm)
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_INSTANCE_NORMS += (nn.LazyInstanceNorm1d, nn.LazyInstanceNorm2d, nn.LazyInstanceNorm3d)
KNOWN_NORMS: tuple[
    tuple[type | tuple[type, ...], str, str], ...
] = (  # (class or classes, name, what its statistics span)
    (nn.SyncBatchNorm, "SyncBatchNorm", "batch (all processes) in train mode"),
    (_BATCH_NORMS, "BatchNorm", "batch in train mode"),
    (nn.LayerNorm, "LayerNorm", "each example's own features"),
    (nn.GroupNorm, "GroupNorm", "each example's own channel groups"),
    (_INSTANCE_NORMS, "InstanceNorm", "each example and channel"),
    (nn.LocalResponseNorm, "LocalResponseNorm", "neighbouring channels"),
)
if hasattr(nn, "RMSNorm"):
    KNOWN_NORMS = KNOWN_NORMS + (
        (nn.RMSNorm, "RMSNorm", "each example's own features"),
    )
# parametrizations and layers named after a norm they lack are not norm layers
_NOT_NORMS = ("weightnorm", "spectralnorm", "nonorm", "nolayernorm", "nogroupnorm")


def norm_inventory(model: nn.Module, probe: bool = True) -> list[dict]:
    """Count the normalization layers in ``model``, by class.

    Known classes (BatchNorm, SyncBatchNorm, LayerNorm, RMSNorm, GroupNorm,
    InstanceNorm and their subclasses) are named by type. A class the auditor does not
    know is listed when its name contains "norm" or it keeps a ``running_mean`` buffer,
    and, if ``probe``, classified by behaviour on a random (4, 8, C) input in train
    mode: "batch statistics" if one example's output moves when the others change,
    "per-example" if not.

    Returns:
        A list of dicts with ``class``, ``kind``, ``count`` and ``spans`` (or
        ``probe`` for classes classified by behaviour).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    rows: dict[str, dict] = {}
    for m in model.modules():
        cls = type(m).__name__
        known = next(((n, s) for c, n, s in KNOWN_NORMS if isinstance(m, c)), None)
        if known:
            from_torch = type(m).__module__.startswith("torch.nn")
            kind = known[0] if from_torch else f"{known[0]} subclass"
            spans = known[1]
            if known[0] == "BatchNorm" and not getattr(m, "track_running_stats", 1):
                spans = "batch in train and eval mode (no running statistics)"
            row = rows.setdefault(
                cls, {"class": cls, "kind": kind, "count": 0, "spans": spans}
            )
        elif _looks_like_norm(m):
            if any(
                isinstance(c, tuple(k for k, _, _ in KNOWN_NORMS)) for c in m.modules()
            ):
                continue  # a wrapper around a known norm: the norm itself is listed
            if cls not in rows:
                kind = _probe_norm(m) if probe else "unknown (not probed)"
                rows[cls] = {
                    "class": cls,
                    "kind": kind,
                    "count": 0,
                    "spans": "by behaviour",
                }
            row = rows[cls]
        else:
            continue
        row["count"] += 1
    return list(rows.values())


def _looks_like_norm(m: nn.Module) -> bool:
    """An unknown class is a norm if it keeps running statistics or is named one."""
    name = type(m).__name__.lower().lstrip("_")
    if any(n == "running_mean" for n, _ in m.named_buffers(recurse=False)):
        return True
    return name.endswith("norm") and not name.endswith(_NOT_NORMS)


def _probe_norm(m: nn.Module) -> str:
    """Classify an unknown norm layer by feeding it (4, 8, C) inputs in train mode."""
    C = next(
        (int(p.shape[0]) for p in m.parameters(recurse=False) if p.dim() == 1), None
    )
    C = (
        C
        or getattr(m, "num_features", None)
        or getattr(m, "normalized_shape", (None,))[0]
    )
    if not C:
        return "unknown (no feature size)"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, int(C), generator=g)
    y = x.clone()
    y[1:] = torch.randn(3, 8, int(C), generator=g) * 3 + 1
    with evaluating(m, "train"), torch.no_grad():
        try:
            change = _rel(m(y)[0], m(x)[0])
        except Exception:  # noqa: BLE001 - any failure means "could not probe"
            return "unknown (probe failed)"
    return "batch statistics (probed)" if change > 1e-5 else "per-example (probed)"
