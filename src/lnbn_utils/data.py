"""Data without downloads: English text shipped with Python, and a synthetic task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .masking import lengths_to_padding_mask

__all__ = ["load_text", "CharCorpus", "VariableLengthTask"]


def load_text() -> str:
    """Python's own help texts (``pydoc_data.topics``, ~465K characters), by key."""
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))


class CharCorpus:
    """A character-level corpus, deterministic train/val split
    (first 90% / last 10%).

    Example:
        >>> corpus = CharCorpus()
        >>> x, y = corpus.batch("train", 4, 16, torch.Generator().manual_seed(0))
        >>> x.shape, y.shape  # y is x shifted left by one character
        (torch.Size([4, 16]), torch.Size([4, 16]))
    """

    def __init__(self, text: Optional[str] = None, val_fraction: float = 0.1) -> None:
        text = load_text() if text is None else text
        if not isinstance(text, str):
            raise TypeError(f"expected text to be a str, got {type(text).__name__}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"expected 0 < val_fraction < 1, got {val_fraction}")
        if len(text) < 100:
            raise ValueError(
                f"expected a text of at least 100 characters, got {len(text)}"
            )
        n_val = int(len(text) * val_fraction)
        if n_val < 2 or len(text) - n_val < 2:
            raise ValueError(
                "expected at least 2 characters in each split, got "
                f"{len(text) - n_val} "
                f"train and {n_val} val from val_fraction={val_fraction} of "
                f"{len(text)} characters"
            )
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        data = self.encode(text)
        self.train, self.val = data[:-n_val], data[-n_val:]

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> torch.Tensor:
        unknown = set(s) - set(self.stoi)
        if unknown:
            raise ValueError(
                "expected characters from the corpus vocabulary, "
                f"got unknown {sorted(unknown)[:5]}"
            )
        return torch.tensor([self.stoi[c] for c in s], dtype=torch.long)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def batch(
        self, split: str, batch_size: int, block_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` random windows: inputs (B, T) and next-char targets (B, T)."""
        if split not in ("train", "val"):
            raise ValueError(f"expected split 'train' or 'val', got {split!r}")
        data = self.train if split == "train" else self.val
        if not 1 <= block_size < len(data) or batch_size < 1:
            raise ValueError(
                f"expected batch_size >= 1 and 1 <= block_size < {len(data)}, "
                f"got {batch_size}, {block_size}"
            )
        starts = torch.randint(
            len(data) - block_size, (batch_size,), generator=generator
        )
        idx = starts[:, None] + torch.arange(block_size)  # (B, T)
        return data[idx], data[idx + 1]


@dataclass(frozen=True)
class VariableLengthTask:
    """Synthetic variable-length classification: which marker token is in the majority?

    Each sequence has a label y in {0, 1}. Every position is, with probability
    ``marker_prob``, a marker token (token 1 + y with probability ``marker_bias``,
    the other marker otherwise), and else a noise token from 3..vocab_size-1. Token 0
    is padding. Longer sequences carry more evidence, so length matters, and a
    mean-pooled classifier can solve it. Lengths are drawn from ``length_probs``
    (weights over min_len..max_len; uniform when None).
    """

    vocab_size: int = 16
    min_len: int = 4
    max_len: int = 32
    marker_prob: float = 0.3
    marker_bias: float = 0.75
    length_probs: Optional[tuple[float, ...]] = None

    PAD = 0

    def __post_init__(self) -> None:
        if self.vocab_size < 4:
            raise ValueError(
                "expected vocab_size >= 4 (pad, two markers, noise), "
                f"got {self.vocab_size}"
            )
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(
                f"expected 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}"
            )
        for name in ("marker_prob", "marker_bias"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, (int, float)):
                raise TypeError(f"expected {name} to be a float, got {p!r}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"expected a probability 0 <= {name} <= 1, got {p!r}")
        n = self.max_len - self.min_len + 1
        if self.length_probs is None:
            return
        probs = self.length_probs
        if len(probs) != n:
            raise ValueError(
                f"expected {n} length_probs (one per length "
                f"{self.min_len}..{self.max_len}), got {len(probs)}"
            )
        if not all(0.0 <= p <= 1.0 for p in probs) or not sum(probs) > 0:
            raise ValueError(
                "expected length_probs in [0, 1] with a positive sum, "
                f"got {tuple(probs)}"
            )

    def sample_lengths(self, n: int, generator: torch.Generator) -> torch.Tensor:
        probs = (
            torch.ones(self.max_len - self.min_len + 1)
            if self.length_probs is None
            else torch.tensor(self.length_probs)
        )
        return self.min_len + torch.multinomial(
            probs, n, replacement=True, generator=generator
        )

    def batch(
        self,
        batch_size: int,
        generator: torch.Generator,
        lengths: Optional[torch.Tensor | Sequence[int]] = None,
        T: Optional[int] = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens (B, T) padded with 0, padding_mask (B, T) (True: pad), labels (B,)."""
        lengths = (
            self.sample_lengths(batch_size, generator)
            if lengths is None
            else torch.as_tensor(lengths)
        )
        T = int(lengths.max()) if T is None else T
        mask = lengths_to_padding_mask(lengths, T)  # validates lengths <= T
        B = len(lengths)
        labels = torch.randint(2, (B,), generator=generator)
        u = torch.rand(B, T, generator=generator)
        noise = torch.randint(3, self.vocab_size, (B, T), generator=generator)
        agree = torch.rand(B, T, generator=generator) < self.marker_bias
        marker = torch.where(agree, 1 + labels[:, None], 2 - labels[:, None])
        tokens = torch.where(u < self.marker_prob, marker, noise).masked_fill(
            mask, self.PAD
        )
        return tokens, mask, labels
