"""How sequences are grouped into batches, and what that does to a classifier's inputs.

A batching is a list of index tensors into a dataset of N sequences; each batch is
padded to its longest member (or to a fixed T). Two strategies are compared in the
book: random batches (the default of most data loaders) and length buckets
(sort by length, cut into consecutive batches, shuffle the batch order), which wastes
almost no padding but makes every batch homogeneous in length.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from ._args import check_index_batches, check_int
from .masking import integer_lengths, lengths_to_padding_mask
from .train import evaluating

__all__ = [
    "random_batches",
    "bucketed_batches",
    "token_budget_batches",
    "single_batches",
    "batch_token_counts",
    "predict_batched",
]


def _check_lengths(lengths: torch.Tensor | Sequence[int]) -> torch.Tensor:
    lengths = integer_lengths(lengths)
    if lengths.dim() != 1 or lengths.numel() == 0:
        raise ValueError(
            "expected a non-empty 1-D tensor of lengths, "
            f"got shape {tuple(lengths.shape)}"
        )
    if int(lengths.min()) < 1:
        raise ValueError(f"expected every length >= 1, got min {int(lengths.min())}")
    return lengths


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"expected batch_size to be a positive int, got {batch_size!r}"
        )


def random_batches(
    n: int, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """A random permutation of ``range(n)`` cut into batches of ``batch_size``.

    The last batch may be smaller.

    Example:
        >>> [b.tolist() for b in random_batches(5, 2, torch.Generator().manual_seed(0))]
        [[4, 0], [1, 3], [2]]
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"expected n to be a positive int, got {n!r}")
    _check_batch_size(batch_size)
    return list(torch.randperm(n, generator=generator).split(batch_size))


def bucketed_batches(
    lengths: torch.Tensor | Sequence[int], batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Length buckets: sort by length (ties in random order), cut, shuffle the batches.

    Each batch holds sequences of (nearly) the same length, so padding is minimal,
    but the number of real tokens per batch now follows the length of its bucket.
    """
    lengths = _check_lengths(lengths)
    _check_batch_size(batch_size)
    perm = torch.randperm(len(lengths), generator=generator)  # random tie-breaking
    order = perm[torch.argsort(lengths[perm], stable=True)]
    batches = list(order.split(batch_size))
    return [
        batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()
    ]


def token_budget_batches(
    lengths: torch.Tensor | Sequence[int], max_tokens: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Length buckets under a token budget (fairseq's ``--max-tokens``).

    Sort by length (ties in random order), fill each batch while its padded size
    ``len(batch) * longest`` stays within ``max_tokens``, then shuffle the batches.
    Short sequences come many to a batch, long ones few, so the number of real
    tokens per batch stays nearly constant.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sorted(len(b) for b in token_budget_batches([2, 2, 2, 4, 4], 4, g))
        [1, 1, 1, 2]
    """
    lengths = _check_lengths(lengths)
    if not isinstance(max_tokens, int) or max_tokens < int(lengths.max()):
        raise ValueError(
            "expected max_tokens to be an int of at least the longest length "
            f"{int(lengths.max())}, got {max_tokens!r}"
        )
    perm = torch.randperm(len(lengths), generator=generator)  # random tie-breaking
    order = perm[torch.argsort(lengths[perm], stable=True)].tolist()
    batches, current = [], []
    for i in order:  # ascending lengths: the newest sequence is the longest
        if current and (len(current) + 1) * int(lengths[i]) > max_tokens:
            batches.append(torch.tensor(current))
            current = []
        current.append(i)
    batches.append(torch.tensor(current))
    return [
        batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()
    ]


def single_batches(n: int) -> list[torch.Tensor]:
    """One sequence per batch, in order: no padding, no other sequence in the batch."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"expected n to be a positive int, got {n!r}")
    return list(torch.arange(n).split(1))


def batch_token_counts(
    lengths: torch.Tensor | Sequence[int], batches: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real tokens and padded slots (B * longest length) of every batch.

    Returns:
        ``(real, padded)``, two long tensors of shape (n_batches,); the padding
        fraction of batch i is ``1 - real[i] / padded[i]``.
    """
    lengths = _check_lengths(lengths)
    batches = check_index_batches(batches, len(lengths))
    real = torch.stack([lengths[b].sum() for b in batches])
    padded = torch.stack([lengths[b].max() * len(b) for b in batches])
    return real, padded


@torch.no_grad()
def predict_batched(
    model: nn.Module,
    tokens: torch.Tensor,
    lengths: torch.Tensor | Sequence[int],
    batches: Sequence[torch.Tensor],
    mode: str = "eval",
    T: Optional[int] = None,
    pad_id: int = 0,
) -> torch.Tensor:
    """Classifier logits for every sequence, batch by batch; the model is unchanged.

    Each batch is cut from ``tokens`` and padded to its longest member (or to ``T``)
    with its padding mask. In mode "train" BatchNorm layers normalize with the
    batch's own statistics (their running statistics are saved and restored); in
    "eval" with the running statistics. No gradients, no dropout in these models.

    Args:
        model: a classifier ``model(tokens, padding_mask) -> (B, n_classes)``.
        tokens: (N, T_max) token ids, right-padded; only the first ``lengths[i]`` count.
        lengths: (N,) real lengths.
        batches: index tensors covering the sequences to predict.
        mode: "train" (batch statistics) or "eval" (running statistics).
        T: pad every batch to this length instead of its longest member.
        pad_id: the token id written at padded positions.

    Returns:
        (N, n_classes) logits in dataset order (rows not in any batch stay NaN).
    """
    lengths = _check_lengths(lengths)
    if mode not in ("train", "eval"):
        raise ValueError(f"expected mode 'train' or 'eval', got {mode!r}")
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(
            f"expected tokens to be a torch.Tensor, got {type(tokens).__name__}"
        )
    if tokens.dim() != 2 or tokens.shape[0] != len(lengths):
        raise ValueError(
            f"expected tokens of shape (N={len(lengths)}, T), got {tuple(tokens.shape)}"
        )
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex:
        raise TypeError(f"expected integer token ids, got dtype {tokens.dtype}")
    if int(lengths.max()) > tokens.shape[1]:
        raise ValueError(
            f"expected lengths <= the token rows' length {tokens.shape[1]}, "
            f"got a length of {int(lengths.max())}"
        )
    batches = check_index_batches(batches, len(lengths))
    if T is not None:  # at least the longest sequence predicted
        check_int("T", T, max(int(lengths[b].max()) for b in batches))
    check_int("pad_id", pad_id)
    out: Optional[torch.Tensor] = None
    with evaluating(model, mode):
        for b in batches:
            Tb = int(lengths[b].max()) if T is None else T
            mask = lengths_to_padding_mask(lengths[b], Tb)  # (B, Tb); lengths <= Tb
            x = torch.full((len(b), Tb), pad_id, dtype=tokens.dtype)
            n = min(Tb, tokens.shape[1])
            x[:, :n] = tokens[b, :n].masked_fill(mask[:, :n], pad_id)
            logits = model(x, mask)  # (B, n_classes)
            if (
                not torch.is_tensor(logits)
                or logits.shape[:1] != b.shape
                or logits.dim() != 2
            ):
                raise ValueError(
                    "expected a classifier returning (B, n_classes) logits, got "
                    f"{_shape_of(logits)} for B={len(b)} (a language model's "
                    "logits are (B, T, vocab_size))"
                )
            if out is None:
                out = torch.full((len(lengths), logits.shape[-1]), float("nan"))
            out[b] = logits
    assert out is not None
    return out


def _shape_of(out: object) -> str:
    return f"shape {tuple(out.shape)}" if torch.is_tensor(out) else type(out).__name__
