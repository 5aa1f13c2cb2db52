"""Memory accounting: what autograd keeps alive for the backward pass."""
from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["saved_tensor_bytes"]


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
