"""The two synthetic variable-length classification tasks, without downloads.

``VariableLengthTask`` labels a sequence by the marker its generator favoured, so
even a perfect classifier is wrong on the sequences where the other marker happens
to win: its accuracy saturates at the majority-count rule. ``MajorityTask`` labels
each sequence by the marker that *is* in the majority, so a perfect classifier
scores 100% and the errors, flips and margins of a trained model are the model's
own. Both return ``(tokens, padding_mask, labels)`` from ``batch``, with token 0 as
padding and True marking padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from ._args import check_int
from .masking import integer_lengths, lengths_to_padding_mask
from .models import TinyTransformer, TransformerConfig
from .repro import seed_everything
from .train import classifier_loss, train

__all__ = [
    "MajorityTask",
    "VariableLengthTask",
    "majority_classifier",
    "train_majority_classifier",
]


@dataclass(frozen=True)
class MajorityTask:
    """Is the marker named by the first token in the majority? Ties are never drawn.

    The first token is a query: 3 names marker 1, 4 names marker 2. Every later
    position is a marker with probability ``marker_prob`` (1 or 2 with equal odds)
    and else a noise token from 5..vocab_size-1; sequences whose two marker counts
    tie are redrawn. The label is 1 when the named marker outnumbers the other, a
    deterministic function of the tokens (Bayes accuracy 1) that no linear function
    of the token counts computes: a model must combine the query with the counts,
    which one attention layer can do. Token 0 is padding. Lengths are uniform on
    min_len..max_len.

    Example:
        >>> task = MajorityTask(max_len=8)
        >>> tokens, mask, labels = task.batch(4, torch.Generator().manual_seed(0))
        >>> named = tokens[:, :1] - 2  # the marker the query names: 1 or 2
        >>> n_named = (tokens[:, 1:] == named).sum(1)
        >>> n_other = (tokens[:, 1:] == 3 - named).sum(1)
        >>> bool(((n_named > n_other).long() == labels).all())
        True
    """

    vocab_size: int = 16
    min_len: int = 4
    max_len: int = 16
    marker_prob: float = 0.4

    PAD = 0

    def __post_init__(self) -> None:
        if self.vocab_size < 6:
            raise ValueError(
                f"expected vocab_size >= 6 (pad, 2 markers, 2 queries, noise), got "
                f"{self.vocab_size}"
            )
        if not 2 <= self.min_len <= self.max_len:
            raise ValueError(
                f"expected 2 <= min_len <= max_len, got {self.min_len}, {self.max_len}"
            )
        if not 0.0 < self.marker_prob <= 1.0:
            raise ValueError(f"expected 0 < marker_prob <= 1, got {self.marker_prob}")

    def sample_lengths(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` lengths, uniform on min_len..max_len."""
        check_int("n", n, 1)
        return torch.randint(self.min_len, self.max_len + 1, (n,), generator=generator)

    def _draw(self, lengths: torch.Tensor, T: int, g: torch.Generator) -> torch.Tensor:
        B = len(lengths)
        u = torch.rand(B, T, generator=g)
        marker = torch.randint(1, 3, (B, T), generator=g)
        noise = torch.randint(5, self.vocab_size, (B, T), generator=g)
        tokens = torch.where(u < self.marker_prob, marker, noise)
        tokens[:, 0] = torch.randint(3, 5, (B,), generator=g)  # the query
        return tokens.masked_fill(lengths_to_padding_mask(lengths, T), self.PAD)

    @staticmethod
    def counts(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """How often the named marker and the other marker occur, each (B,)."""
        named = tokens[:, :1] - 2  # (B, 1): 1 or 2
        rest = tokens[:, 1:]
        return (rest == named).sum(1), (rest == 3 - named).sum(1)

    def batch(
        self,
        batch_size: int,
        generator: torch.Generator,
        lengths: torch.Tensor | Sequence[int] | None = None,
        T: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens (B, T) right-padded with 0, pad mask (B, T) (True = pad), labels (B,).

        ``lengths`` fixes each sequence's length (drawn when None); ``T`` pads to it.
        """
        lengths = _batch_lengths(self, batch_size, generator, lengths, least=2)
        T = int(lengths.max()) if T is None else T
        mask = lengths_to_padding_mask(lengths, T)  # validates lengths <= T
        tokens = self._draw(lengths, T, generator)
        for _ in range(1000):  # redraw the rows whose marker counts tie
            n_named, n_other = self.counts(tokens)
            tie = n_named == n_other
            if not tie.any():
                break
            tokens[tie] = self._draw(lengths[tie], T, generator)
        else:
            raise RuntimeError("could not draw untied sequences; raise marker_prob")
        return tokens, mask, (n_named > n_other).long()


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
        """``n`` lengths drawn from ``length_probs`` (uniform when None)."""
        check_int("n", n, 1)
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
        lengths = _batch_lengths(self, batch_size, generator, lengths, least=1)
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


def _batch_lengths(
    task: MajorityTask | VariableLengthTask,
    batch_size: int,
    generator: Optional[torch.Generator],
    lengths: torch.Tensor | Sequence[int] | None,
    least: int,
) -> torch.Tensor:
    """The batch's (B,) lengths: drawn, or ``lengths`` checked against the batch."""
    check_int("batch_size", batch_size, 1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            "expected generator to be a torch.Generator, "
            f"got {type(generator).__name__}"
        )
    if lengths is None:
        return task.sample_lengths(batch_size, generator)
    lengths = integer_lengths(lengths)
    if lengths.dim() != 1 or len(lengths) != batch_size:
        raise ValueError(
            f"expected one length per sequence, (batch_size={batch_size},), "
            f"got lengths of shape {tuple(lengths.shape)}"
        )
    if int(lengths.min()) < least:
        raise ValueError(f"expected lengths >= {least}, got min {int(lengths.min())}")
    return lengths


def majority_classifier(
    task: MajorityTask,
    norm: str,
    position: str = "learned",
    *,
    seed: int,
    init: str = "gpt2",
    n_embd: int = 32,
    block_size: int = 64,
) -> TinyTransformer:
    """A one-layer, non-causal ``TinyTransformer`` classifier for ``task`` (4 heads).

    The weights depend only on ``seed`` and the configuration; they are drawn after
    ``seed_everything(seed)``. ``init`` is ``TransformerConfig.init`` ("gpt2" or
    "legacy", whose position embedding is N(0, 1)).

    Example:
        >>> model = majority_classifier(MajorityTask(), "layer", seed=0)
        >>> model.cfg.causal, model.cfg.n_classes
        (False, 2)
    """
    seed_everything(seed)
    cfg = TransformerConfig(
        vocab_size=task.vocab_size, block_size=block_size, n_layer=1, n_head=4,
        n_embd=n_embd, causal=False, n_classes=2, norm=norm, position=position,
        init=init,
    )  # fmt: skip
    return TinyTransformer(cfg)


def train_majority_classifier(
    task: MajorityTask,
    norm: str,
    position: str = "learned",
    *,
    seed: int,
    steps: int = 200,
    lr: float = 2e-3,
    batch_size: int = 32,
    buckets: bool = False,
) -> TinyTransformer:
    """Train ``majority_classifier(task, norm, position, seed=seed)`` with AdamW.

    Every step draws ``batch_size`` sentences from ``task`` (generator seeded with
    ``seed + 1``), padded to the longest: random lengths, or with ``buckets`` one
    length per batch (a length bucket). The learning rate warms up over 20 steps.

    Returns: the trained model (in training mode).
    """
    if not isinstance(buckets, bool):
        raise TypeError(f"expected buckets as a bool, got {buckets!r}")
    model = majority_classifier(task, norm, position, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not buckets:
            return task.batch(batch_size, g)
        n = task.sample_lengths(1, g).item()  # a bucket: sentences of one length
        return task.batch(batch_size, g, lengths=[n] * batch_size)

    train(model, next_batch, classifier_loss, steps=steps, lr=lr, warmup_steps=20)
    return model
