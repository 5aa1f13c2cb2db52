"""Padding masks: True marks padding (PyTorch's ``key_padding_mask`` convention)."""

from __future__ import annotations

import operator
from typing import Optional, Sequence

import torch

__all__ = [
    "lengths_to_padding_mask",
    "pad_sequences",
    "attention_mask",
    "pack_sequences",
    "document_positions",
]


def check_padding_mask(padding_mask: object, name: str = "padding_mask") -> None:
    """Refuse a mask that is not a bool tensor, with the one TypeError every
    mask-taking function raises (a 0/1 integer mask could mean either convention)."""
    if not isinstance(padding_mask, torch.Tensor):
        raise TypeError(
            f"expected {name} to be a bool torch.Tensor (True = pad), "
            f"got {type(padding_mask).__name__}"
        )
    if padding_mask.dtype != torch.bool:
        raise TypeError(
            f"expected {name} of dtype torch.bool (True = pad), "
            f"got {padding_mask.dtype}"
        )


def real_token_weights(
    padding_mask: Optional[torch.Tensor],
    dtype: torch.dtype = torch.float32,
    shape: Optional[tuple[int, ...] | torch.Size] = None,
    device: Optional[torch.device | str] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real-token weights (1 at real tokens, 0 at pads) and how many there are.

    The one place a padding mask (True = pad) becomes numbers. With
    ``padding_mask=None`` every token of a ``shape`` = (B, T) batch is real.
    No synchronization: the count stays a tensor.

    Returns:
        ``(weights, count)``: weights (B, T) of ``dtype``, count () a long tensor.

    Example:
        >>> w, n = real_token_weights(lengths_to_padding_mask([1, 2], T=2))
        >>> w.tolist(), int(n)
        ([[1.0, 0.0], [1.0, 1.0]], 3)
    """
    if padding_mask is None:
        if shape is None:
            raise ValueError("expected a padding_mask, or the (B, T) shape without one")
        B, T = shape
        return torch.ones(B, T, dtype=dtype, device=device), torch.tensor(B * T)
    check_padding_mask(padding_mask)
    real = ~padding_mask
    return real.to(dtype), real.sum()


def integer_lengths(lengths: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """``lengths`` as a tensor; float, complex and bool dtypes are refused."""
    if not isinstance(lengths, torch.Tensor) and len(lengths) == 0:
        lengths = torch.zeros(0, dtype=torch.long)  # as_tensor([]) would be float
    lengths = torch.as_tensor(lengths)
    if (
        lengths.dtype.is_floating_point
        or lengths.dtype.is_complex
        or lengths.dtype == torch.bool
    ):
        raise TypeError(f"expected integer lengths, got dtype {lengths.dtype}")
    return lengths


def lengths_to_padding_mask(
    lengths: torch.Tensor | Sequence[int], T: Optional[int] = None
) -> torch.Tensor:
    """Bool (B, T) mask, True at positions >= length (right padding).

    Example:
        >>> lengths_to_padding_mask([2, 3], T=4)
        tensor([[False, False,  True,  True],
                [False, False, False,  True]])
    """
    lengths = integer_lengths(lengths)
    if lengths.dim() != 1:
        raise ValueError(
            f"expected a 1-D tensor of lengths, got shape {tuple(lengths.shape)}"
        )
    if T is not None:
        if isinstance(T, bool) or not hasattr(T, "__index__"):
            raise TypeError(f"expected T to be an int or None, got {T!r}")
        T = operator.index(T)
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"expected non-negative lengths, got min {int(lengths.min())}")
    if T is None and lengths.numel() == 0:
        raise ValueError("expected T for an empty batch of lengths, got T=None")
    T = int(lengths.max()) if T is None else T
    if T < 0:
        raise ValueError(f"expected T >= 0, got T={T}")
    if lengths.numel() and int(lengths.max()) > T:
        raise ValueError(
            f"expected every length <= T={T}, got max length {int(lengths.max())}"
        )
    return torch.arange(T, device=lengths.device)[None, :] >= lengths[:, None]


def pad_sequences(
    seqs: Sequence[torch.Tensor], T: Optional[int] = None, pad_value: float = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (L_i, ...) tensors to (B, T, ...); return (padded, padding_mask)."""
    if len(seqs) == 0:
        raise ValueError("expected at least one sequence, got an empty list")
    for i, s in enumerate(seqs):
        if not isinstance(s, torch.Tensor) or s.dim() < 1:
            got = (
                f"shape {tuple(s.shape)}"
                if isinstance(s, torch.Tensor)
                else type(s).__name__
            )
            raise TypeError(f"expected (L, ...) tensors, got {got} at index {i}")
        if s.shape[1:] != seqs[0].shape[1:] or s.dtype != seqs[0].dtype:
            raise ValueError(
                f"expected every sequence of trailing shape {tuple(seqs[0].shape[1:])} "
                f"and dtype {seqs[0].dtype}, got {tuple(s.shape[1:])} {s.dtype} "
                f"at index {i}"
            )
    lengths = torch.tensor([len(s) for s in seqs])
    T = int(lengths.max()) if T is None else T
    mask = lengths_to_padding_mask(lengths, T)
    out = torch.full((len(seqs), T, *seqs[0].shape[1:]), pad_value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, mask


def pack_sequences(
    seqs: Sequence[torch.Tensor], row_len: int, pad_value: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack 1-D token sequences back to back into rows of ``row_len`` (no splitting).

    Greedy, in order: a sequence starts a new row when it does not fit in the
    current one, and the rest of a row is padding. This is the "packing" of
    language-model pretraining without cross-row splits (Krell et al. 2021).

    Returns:
        ``(tokens, doc_ids)``, both (R, row_len): tokens padded with ``pad_value``;
        doc_ids the index of the sequence each token came from, -1 at padding.

    Example:
        >>> tokens, doc_ids = pack_sequences([torch.tensor([5, 6]), torch.tensor([7]),
        ...                                   torch.tensor([8, 9])], row_len=3)
        >>> doc_ids.tolist()
        [[0, 0, 1], [2, 2, -1]]
    """
    if isinstance(row_len, bool) or not isinstance(row_len, int) or row_len < 1:
        raise ValueError(f"expected an int row_len >= 1, got {row_len!r}")
    if len(seqs) == 0:
        raise ValueError("expected at least one sequence, got an empty list")
    rows: list[list[int]] = [[]]
    used = 0
    for i, s in enumerate(seqs):
        if not isinstance(s, torch.Tensor) or s.dim() != 1 or s.dtype != torch.long:
            got = f"{s.dtype} of shape {tuple(s.shape)}" if torch.is_tensor(s) else s
            raise TypeError(f"expected 1-D long tensors, got {got} at index {i}")
        if not 1 <= len(s) <= row_len:
            raise ValueError(
                f"expected sequence lengths in [1, row_len={row_len}], got {len(s)} "
                f"at index {i}"
            )
        if used + len(s) > row_len:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += len(s)
    tokens = torch.full((len(rows), row_len), pad_value, dtype=torch.long)
    doc_ids = torch.full((len(rows), row_len), -1, dtype=torch.long)
    for r, docs in enumerate(rows):
        row = torch.cat([seqs[i] for i in docs])
        tokens[r, : len(row)] = row
        doc_ids[r, : len(row)] = torch.cat(
            [torch.full((len(seqs[i]),), i) for i in docs]
        )
    return tokens, doc_ids


def _check_doc_ids(doc_ids: torch.Tensor, T: Optional[int] = None) -> None:
    """Refuse document ids that are not a (B, T) integer tensor."""
    if not isinstance(doc_ids, torch.Tensor):
        raise TypeError(
            f"expected doc_ids to be a torch.Tensor, got {type(doc_ids).__name__}"
        )
    if (
        doc_ids.dtype.is_floating_point
        or doc_ids.dtype.is_complex
        or (doc_ids.dtype == torch.bool)
    ):
        raise TypeError(f"expected integer doc_ids, got dtype {doc_ids.dtype}")
    if doc_ids.dim() != 2 or (T is not None and doc_ids.shape[1] != T):
        want = "(B, T)" if T is None else f"(B, T={T})"
        raise ValueError(
            f"expected doc_ids of shape {want}, got shape {tuple(doc_ids.shape)}"
        )


def document_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """Each token's position within its own document: restarts at 0 per document.

    Shape:
        doc_ids: (B, T) long, -1 at padding; returns (B, T) long (0 at padding).

    Example:
        >>> document_positions(torch.tensor([[0, 0, 1, 1, 1, -1]])).tolist()
        [[0, 1, 0, 1, 2, 0]]
    """
    _check_doc_ids(doc_ids)
    T = doc_ids.shape[1]
    t = torch.arange(T, device=doc_ids.device).expand_as(doc_ids)  # (B, T)
    first = torch.ones_like(doc_ids, dtype=torch.bool)
    first[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]  # a document starts here
    start = torch.cummax(torch.where(first, t, 0), dim=1).values  # its start index
    return torch.where(doc_ids >= 0, t - start, 0)


def attention_mask(
    padding_mask: Optional[torch.Tensor],
    T: int,
    causal: bool,
    doc_ids: Optional[torch.Tensor] = None,
) -> Optional[torch.Tensor]:
    """Bool (B, 1, T, T) mask for ``F.scaled_dot_product_attention`` (True: attend).

    Combines key padding (no query attends to a pad key) and, if ``causal``, the
    lower-triangular mask. With ``doc_ids`` (B, T) of packed rows (-1 at padding)
    the block-diagonal document mask replaces key padding: a token attends only to
    its own document, and a pad only to pads, so no row of the mask is empty.
    Returns None when there is nothing to mask.
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"expected T to be a positive int, got {T!r}")
    if doc_ids is not None:
        _check_doc_ids(doc_ids, T)
    if padding_mask is not None:
        check_padding_mask(padding_mask)
    if padding_mask is not None and (
        padding_mask.dim() != 2 or padding_mask.shape[1] != T
    ):
        raise ValueError(
            f"expected a padding_mask of shape (B, T={T}), "
            f"got shape {tuple(padding_mask.shape)}"
        )
    if doc_ids is not None and padding_mask is not None:
        if padding_mask.shape != doc_ids.shape:
            raise ValueError(
                f"expected padding_mask of doc_ids' shape {tuple(doc_ids.shape)}, "
                f"got shape {tuple(padding_mask.shape)}"
            )
    allowed = None
    if causal:
        allowed = torch.ones(T, T, dtype=torch.bool).tril()[None, None]  # (1, 1, T, T)
    if doc_ids is not None:
        keys = (doc_ids[:, :, None] == doc_ids[:, None, :])[:, None]  # (B, 1, T, T)
    elif padding_mask is not None:
        keys = (~padding_mask)[:, None, None, :]  # (B, 1, 1, T)
    else:
        return allowed
    return keys if allowed is None else allowed.to(keys.device) & keys
