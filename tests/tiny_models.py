"""Small models the tests share (pytest puts tests/ on sys.path)."""

import torch

import lnbn_utils as lu


def tiny_classifier(
    norm: str, seed: int = 0, vocab_size: int = 16, block_size: int = 40
):
    """A seeded one-layer, 16-channel mean-pooled classifier with this norm kind."""
    torch.manual_seed(seed)
    cfg = lu.TransformerConfig(
        vocab_size=vocab_size,
        block_size=block_size,
        n_layer=1,
        n_embd=16,
        norm=norm,
        causal=False,
        n_classes=2,
    )
    return lu.TinyTransformer(cfg)
