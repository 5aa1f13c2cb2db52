"""Padding masks: True marks padding (PyTorch's ``key_padding_mask`` convention)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

__all__ = ["lengths_to_padding_mask", "pad_sequences", "attention_mask"]


def lengths_to_padding_mask(lengths: torch.Tensor | Sequence[int], T: Optional[int] = None) -> torch.Tensor:
    """Bool (B, T) mask, True at positions >= length (right padding).

    Example:
        >>> lengths_to_padding_mask([2, 3], T=4)
        tensor([[False, False,  True,  True],
                [False, False, False,  True]])
    """
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1:
        raise ValueError(f"expected a 1-D tensor of lengths, got shape {tuple(lengths.shape)}")
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"expected non-negative lengths, got min {int(lengths.min())}")
    T = int(lengths.max()) if T is None else T
    if lengths.numel() and int(lengths.max()) > T:
        raise ValueError(f"expected every length <= T={T}, got max length {int(lengths.max())}")
    return torch.arange(T, device=lengths.device)[None, :] >= lengths[:, None]


def pad_sequences(
    seqs: Sequence[torch.Tensor], T: Optional[int] = None, pad_value: float = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a list of (L_i, ...) tensors to (B, T, ...); return (padded, padding_mask)."""
    if len(seqs) == 0:
        raise ValueError("expected at least one sequence, got an empty list")
    lengths = torch.tensor([len(s) for s in seqs])
    T = int(lengths.max()) if T is None else T
    mask = lengths_to_padding_mask(lengths, T)
    out = torch.full((len(seqs), T, *seqs[0].shape[1:]), pad_value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, mask


def attention_mask(padding_mask: Optional[torch.Tensor], T: int, causal: bool) -> Optional[torch.Tensor]:
    """Bool (B, 1, T, T) mask for ``F.scaled_dot_product_attention`` (True = may attend).

    Combines key padding (no query attends to a pad key) and, if ``causal``, the
    lower-triangular mask. Returns None when there is nothing to mask.
    """
    allowed = None
    if causal:
        allowed = torch.ones(T, T, dtype=torch.bool).tril()[None, None]  # (1, 1, T, T)
    if padding_mask is not None:
        keys = (~padding_mask)[:, None, None, :]  # (B, 1, 1, T)
        allowed = keys if allowed is None else allowed.to(keys.device) & keys
    return allowed
