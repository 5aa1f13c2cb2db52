"""Text without downloads: English shipped with Python, as a character corpus.

``VariableLengthTask`` lives in ``tasks.py`` with the other synthetic task (it is
still importable from here).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .tasks import VariableLengthTask  # noqa: F401  (its import path here)

__all__ = ["load_text", "CharCorpus"]


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
