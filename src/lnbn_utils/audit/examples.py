"""A small factory for the command line's examples (``module:factory``)."""

from __future__ import annotations

import torch

from ..models import TinyTransformer, TransformerConfig


def tiny_transformer(
    norm: str = "layer", batch: int = 4, length: int = 16, seed: int = 0
) -> tuple[TinyTransformer, torch.Tensor]:
    """The book's tiny causal Transformer with ``norm``, and a (B, T) batch of ids."""
    torch.manual_seed(seed)
    model = TinyTransformer(TransformerConfig(norm=norm))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.cfg.vocab_size, (batch, length), generator=g)
    return model, ids
