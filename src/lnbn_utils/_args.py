"""Argument checks shared by the library's public functions (internal).

Each raises a ``TypeError`` for a value of the wrong type and a ``ValueError`` for
one out of range, naming the argument, what was expected and what arrived.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch


def check_int(name: str, value: object, least: Optional[int] = None) -> int:
    """``value`` must be an int (not a bool, not a float) and at least ``least``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected {name} to be an int, got {value!r}")
    if least is not None and value < least:
        raise ValueError(f"expected {name} >= {least}, got {value}")
    return value


def check_real(
    name: str,
    value: object,
    low: Optional[float] = None,
    high: Optional[float] = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """``value`` must be a finite real number in [low, high] (ends open if asked)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected {name} to be a float, got {value!r}")
    too_low = low is not None and (value <= low if open_low else value < low)
    too_high = high is not None and (value >= high if open_high else value > high)
    if not math.isfinite(value) or too_low or too_high:
        bounds = [f"{'>' if open_low else '>='} {low:g}"] if low is not None else []
        if high is not None:
            bounds.append(f"{'<' if open_high else '<='} {high:g}")
        want = f"a finite {name} {' and '.join(bounds)}".rstrip()
        raise ValueError(f"expected {want}, got {value!r}")
    return float(value)


def check_index_batches(
    batches: object, n: int, name: str = "batches"
) -> list[torch.Tensor]:
    """``batches``: a list of non-empty 1-D integer index sequences into ``range(n)``.

    Returns them as long tensors. A single tensor is refused (iterating it would give
    scalars, not batches).
    """
    if isinstance(batches, torch.Tensor) or not isinstance(batches, Sequence):
        raise TypeError(
            f"expected {name} to be a list of index tensors, got "
            f"{type(batches).__name__}"
        )
    if len(batches) == 0:
        raise ValueError(f"expected at least one batch in {name}, got an empty list")
    out = []
    for i, b in enumerate(batches):
        if not isinstance(b, torch.Tensor):
            if not isinstance(b, Sequence) or not all(
                isinstance(j, int) and not isinstance(j, bool) for j in b
            ):
                raise TypeError(
                    f"expected {name}[{i}] to be a 1-D integer tensor or a list of "
                    f"ints, got {type(b).__name__}"
                )
            b = torch.tensor(list(b), dtype=torch.long)
        if b.dtype.is_floating_point or b.dtype.is_complex or b.dtype == torch.bool:
            raise TypeError(
                f"expected {name}[{i}] to hold integer indices, got dtype {b.dtype}"
            )
        if b.dim() != 1 or b.numel() == 0:
            raise ValueError(
                f"expected {name}[{i}] to be a non-empty 1-D index tensor, "
                f"got shape {tuple(b.shape)}"
            )
        if int(b.min()) < 0 or int(b.max()) >= n:
            raise ValueError(
                f"expected indices in [0, {n}) in {name}[{i}], got range "
                f"[{int(b.min())}, {int(b.max())}]"
            )
        out.append(b.long())
    return out
