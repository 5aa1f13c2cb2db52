"""Seeds and devices: every notebook starts from ``LNBN_SEED`` (default 0)."""

from __future__ import annotations

import os
import random

import torch

__all__ = ["base_seed", "seed_everything", "get_device"]


def base_seed(default: int = 0) -> int:
    """The book's base seed: the ``LNBN_SEED`` environment variable, or ``default``."""
    raw = os.environ.get("LNBN_SEED", str(default))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"expected LNBN_SEED to be an integer, got {raw!r}") from None


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's and torch's generators; return a torch.Generator seeded alike."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"expected an int seed, got {seed!r}")
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def get_device() -> torch.device:
    """CUDA when present, else the CPU (every experiment here fits on a laptop CPU)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
