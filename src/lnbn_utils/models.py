"""A tiny Transformer whose normalization layer is a parameter (nanoGPT-sized)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._args import check_int
from .masking import attention_mask, document_positions
from .norms import make_norm

__all__ = ["TransformerConfig", "TinyTransformer", "Block", "apply_rotary"]

POSITIONS = ("learned", "rotary", "none")


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and design choices of a ``TinyTransformer`` (frozen, validated).

    Args:
        vocab_size: token ids are 0..vocab_size-1.
        block_size: the longest sequence (rows of the learned position table).
        n_layer, n_head, n_embd: blocks, attention heads, channels C (n_embd must
            be divisible by n_head; an even head size for rotary positions).
        norm: any ``make_norm`` kind ("layer", "batch", "masked_batch", "rms", ...).
        norm_position: "pre" (x + f(norm(x))) or "post" (norm(x + f(x))).
        causal: causal attention (a language model) or not (a classifier).
        n_classes: None for a language-model head over the vocabulary, else an
            int >= 1: a classifier head on the mean over real tokens.
        mlp_ratio: the MLP's hidden width is mlp_ratio * n_embd.
        position: "learned", "rotary" or "none" (see the comments below).
        init: "gpt2" or "legacy" (see the comments below).

    Example:
        >>> cfg = TransformerConfig(vocab_size=16, n_classes=2, causal=False)
        >>> TinyTransformer(cfg)(torch.zeros(3, 5, dtype=torch.long)).shape
        torch.Size([3, 2])
    """

    vocab_size: int = 64
    block_size: int = 64  # longest sequence the position embedding covers
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    norm: str = (
        "layer"  # any make_norm kind: "layer", "batch", "masked_batch", "rms", ...
    )
    # "pre": x + f(norm(x)) (GPT-2 and later); "post": norm(x + f(x)) (Vaswani et al.)
    norm_position: str = "pre"
    causal: bool = True  # causal attention for a language model; False for a classifier
    n_classes: Optional[int] = (
        None  # None: LM head over the vocabulary; int: mean-pooled classifier head
    )
    mlp_ratio: int = 4
    # "learned": a learned absolute position embedding (GPT-2); "rotary": queries and
    # keys rotated by position (RoPE, Su et al. 2021), so attention sees only offsets;
    # "none": no position information (a causal model can infer it from the mask).
    position: str = "learned"
    # "gpt2": N(0, 0.02) weights, N(0, 0.01) position embedding, residual projections
    # scaled by 1/sqrt(2 * n_layer) (Radford et al. 2019). "legacy": PyTorch defaults
    # with N(0, 1) embeddings, whose position signal dominates a BN statistic (ch. 2).
    init: str = "gpt2"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check_int(name, getattr(self, name), 1)
        check_int("mlp_ratio", self.mlp_ratio, 1)
        if self.n_classes is not None:
            check_int("n_classes (None for a language model)", self.n_classes, 1)
        if not isinstance(self.causal, bool):
            raise TypeError(f"expected causal to be a bool, got {self.causal!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"expected position in {POSITIONS}, got {self.position!r}")
        if self.init not in ("gpt2", "legacy"):
            raise ValueError(f"expected init 'gpt2' or 'legacy', got {self.init!r}")
        if self.norm_position not in ("pre", "post"):
            raise ValueError(
                f"expected norm_position 'pre' or 'post', got {self.norm_position!r}"
            )
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                "expected n_embd divisible by n_head, "
                f"got n_embd={self.n_embd}, n_head={self.n_head}"
            )
        if self.position == "rotary" and (self.n_embd // self.n_head) % 2:
            raise ValueError(
                "expected an even head size for rotary positions, got "
                f"n_embd // n_head = {self.n_embd // self.n_head}"
            )


def apply_rotary(
    x: torch.Tensor, base: float = 10000.0, positions: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Rotate each pair of channels of ``x`` by an angle proportional to its position.

    Rotary position embedding (RoPE, Su et al. 2021, arXiv:2104.09864), in the
    "rotate half" layout: channel i is paired with channel i + hs/2, and the pair at
    position t turns by ``t * base ** (-2i / hs)``. Applied to queries and keys, it
    makes ``q_t . k_s`` depend on t and s only through the offset t - s.

    Shape:
        x: (B, nh, T, hs) with an even head size hs; returns the same shape.
        positions: optional (B, T) position of each token (default 0..T-1), e.g.
        restarting at each packed document (``masking.document_positions``).

    The angles and the rotation are computed in float32 (float64 for float64 ``x``);
    the result has ``x``'s dtype.
    """
    _check_rotary_args(x, positions)
    T, hs = x.shape[-2], x.shape[-1]
    dtype = torch.promote_types(x.dtype, torch.float32)  # float16/bfloat16 -> float32
    i = torch.arange(0, hs, 2, dtype=dtype, device=x.device)  # (hs/2,)
    inv_freq = base ** (-i / hs)  # one frequency per channel pair
    if positions is None:
        positions = torch.arange(T, device=x.device)  # (T,)
    else:
        positions = positions[:, None]  # (B, 1, T): the same for every head
    angle = positions.to(dtype)[..., None] * inv_freq  # (..., T, hs/2)
    cos, sin = angle.cos(), angle.sin()
    cos, sin = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)  # (..., T, hs)
    xf = x.to(dtype)
    x1, x2 = xf[..., : hs // 2], xf[..., hs // 2 :]
    y = xf * cos + torch.cat([-x2, x1], dim=-1) * sin  # (B, nh, T, hs)
    return y.to(x.dtype)


def _check_rotary_args(x: torch.Tensor, positions: Optional[torch.Tensor]) -> None:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"expected x to be a floating-point torch.Tensor, got {got}")
    if x.dim() < 2 or x.shape[-1] % 2 or (positions is not None and x.dim() != 4):
        raise ValueError(
            "expected x of shape (B, nh, T, hs) with an even head size hs, "
            f"got shape {tuple(x.shape)}"
        )
    if positions is None:
        return
    if not isinstance(positions, torch.Tensor) or positions.dtype in (
        torch.bool,
        torch.complex64,
        torch.complex128,
    ):
        got = positions.dtype if torch.is_tensor(positions) else type(positions)
        raise TypeError(f"expected positions to be a real torch.Tensor, got {got}")
    want = (x.shape[0], x.shape[2])
    if tuple(positions.shape) != want:
        raise ValueError(
            f"expected positions of shape (B, T) = {want}, "
            f"got shape {tuple(positions.shape)}"
        )


class SelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_head, self.causal = cfg.n_head, cfg.causal
        self.rotary = cfg.position == "rotary"
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: Optional[torch.Tensor],
        doc_ids: Optional[torch.Tensor] = None,
        positions: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)  # each (B, T, C)
        q, k, v = (
            t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            for t in (q, k, v)
        )  # (B, nh, T, hs)
        if self.rotary:  # position enters as a rotation of queries and keys only
            q, k = (apply_rotary(t, positions=positions) for t in (q, k))
        mask = attention_mask(padding_mask, T, self.causal, doc_ids)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(x.device))
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class Block(nn.Module):
    """One Transformer block: attention and MLP, each with a norm and a residual."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.pre = cfg.norm_position == "pre"
        self.norm1 = make_norm(cfg.norm, cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.norm2 = make_norm(cfg.norm, cfg.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd),
        )

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: Optional[torch.Tensor] = None,
        doc_ids: Optional[torch.Tensor] = None,
        positions: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        m = padding_mask
        if self.pre:  # x + f(norm(x))
            x = x + self.attn(self.norm1(x, m), m, doc_ids, positions)
            return x + self.mlp(self.norm2(x, m))
        x = self.norm1(x + self.attn(x, m, doc_ids, positions), m)  # norm(x + f(x))
        return self.norm2(x + self.mlp(x), m)


class TinyTransformer(nn.Module):
    """Token + position embeddings, ``n_layer`` blocks, and an LM or classifier head.

    ``forward(idx, padding_mask=None)`` takes token ids (B, T) and returns logits:
    (B, T, vocab_size) for a language model, (B, n_classes) for a classifier (mean
    over the real tokens). The padding mask (True = pad) reaches every norm and
    every attention layer. Packed rows (several documents per row) take
    ``doc_ids`` instead; see ``forward``.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        # Only "learned" positions have a table; with "rotary" or "none" nothing
        # would train one (and plain DistributedDataParallel refuses such a model).
        self.pos_emb: Optional[nn.Embedding] = None
        if cfg.position == "learned":
            self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        else:
            self._draw_position_table()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        # Pre-norm stacks end with a final norm (GPT-2); post-norm outputs already are.
        self.norm_f = make_norm(
            cfg.norm if cfg.norm_position == "pre" else "none", cfg.n_embd
        )
        self.head = nn.Linear(cfg.n_embd, cfg.n_classes or cfg.vocab_size)
        if cfg.init == "gpt2":
            self._init_gpt2()
        self.register_load_state_dict_pre_hook(_drop_position_table)

    def _draw_position_table(self) -> None:
        """Draw the random numbers a (block_size, C) table's initialization draws.

        The draws are discarded. A model without a position table then gets the
        same weights everywhere else as one with a learned table, from the same seed.
        """
        torch.empty(self.cfg.block_size, self.cfg.n_embd).normal_()

    def _init_gpt2(self) -> None:
        """GPT-2's initialization: small embeddings, scaled residual projections."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if module is self.tok_emb and self.pos_emb is None:
                self._draw_position_table()  # where the table would come next
        if self.pos_emb is None:
            self._draw_position_table()
        else:
            nn.init.normal_(self.pos_emb.weight, std=0.01)
        for block in self.blocks:  # the two layers that write into the residual stream
            for proj in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(proj.weight, std=0.02 / (2 * self.cfg.n_layer) ** 0.5)

    def forward(
        self,
        idx: torch.Tensor,
        padding_mask: Optional[torch.Tensor] = None,
        doc_ids: Optional[torch.Tensor] = None,
        cross_document: bool = False,
    ) -> torch.Tensor:
        """Logits for token ids ``idx`` (B, T).

        Args:
            padding_mask: (B, T) bool, True at padding.
            doc_ids: (B, T) long for packed rows (``masking.pack_sequences``): the
                document of each token, -1 at padding (the padding mask is then
                ``doc_ids < 0``). Attention stays inside each document and positions
                restart at 0 for each, so a document's outputs are what it would get
                alone, up to the batch statistics of BatchNorm-like norms. A
                language model takes any ids >= 0 (a minibatch of packed rows); a
                classifier returns one row of logits per document, (D, n_classes),
                for documents numbered 0..D-1.
            cross_document: with ``doc_ids``, naive packing instead: attention and
                positions span the whole row; only the pooling is per document.
        """
        self._check(idx, padding_mask)
        if not isinstance(cross_document, bool):
            raise TypeError(
                f"expected cross_document to be a bool, got {cross_document!r}"
            )
        if cross_document and doc_ids is None:
            raise ValueError(
                "expected doc_ids with cross_document=True, got doc_ids=None"
            )
        positions = None
        if doc_ids is not None:
            padding_mask = self._check_docs(idx, padding_mask, doc_ids)
            if not cross_document:
                positions = document_positions(doc_ids)  # (B, T)
        attn_docs = None if cross_document else doc_ids
        B, T = idx.shape
        x = self.tok_emb(idx)  # (B, T, C)
        if self.cfg.position == "learned":
            pos = torch.arange(T, device=idx.device) if positions is None else positions
            x = x + self.pos_emb(pos)  # (B, T, C)
        rotary_pos = positions if self.cfg.position == "rotary" else None
        for block in self.blocks:
            x = block(x, padding_mask, attn_docs, rotary_pos)
        x = self.norm_f(x, padding_mask)
        if self.cfg.n_classes is None:
            return self.head(x)  # (B, T, vocab_size)
        if doc_ids is not None:  # mean over each document's tokens
            return self.head(self._pool_documents(x, doc_ids))  # (D, n_classes)
        real = (
            torch.ones(B, T, 1, device=x.device)
            if padding_mask is None
            else (~padding_mask)[..., None].to(x.dtype)
        )
        pooled = (x * real).sum(1) / real.sum(1)  # (B, C): mean over real tokens
        return self.head(pooled)  # (B, n_classes)

    @staticmethod
    def _pool_documents(x: torch.Tensor, doc_ids: torch.Tensor) -> torch.Tensor:
        real = doc_ids >= 0  # (B, T)
        ids, feats = doc_ids[real], x[real]  # (N,), (N, C)
        D = int(ids.max()) + 1
        sums = feats.new_zeros(D, x.shape[-1]).index_add_(0, ids, feats)
        counts = torch.bincount(ids, minlength=D).to(x.dtype)[:, None]
        return sums / counts  # (D, C)

    def _check_docs(
        self,
        idx: torch.Tensor,
        padding_mask: Optional[torch.Tensor],
        doc_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Validate packed-row document ids; return the padding mask they imply."""
        if not isinstance(doc_ids, torch.Tensor):
            raise TypeError(
                f"expected doc_ids to be a torch.Tensor, got {type(doc_ids).__name__}"
            )
        if doc_ids.dtype != torch.long or doc_ids.shape != idx.shape:
            raise ValueError(
                f"expected long doc_ids of shape {tuple(idx.shape)}, "
                f"got {doc_ids.dtype} of shape {tuple(doc_ids.shape)}"
            )
        pads = doc_ids < 0
        if bool((doc_ids < -1).any()) or bool(pads.all()):
            raise ValueError(
                "expected doc_ids >= 0 at real tokens and -1 at padding, with at "
                f"least one real token, got range [{int(doc_ids.min())}, "
                f"{int(doc_ids.max())}]"
            )
        if padding_mask is not None and not torch.equal(padding_mask, pads):
            raise ValueError("expected padding_mask to equal doc_ids < 0 (or None)")
        first = torch.ones_like(pads)
        first[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
        D = int(doc_ids.max()) + 1
        starts = torch.bincount(doc_ids[first & ~pads], minlength=D)
        if self.cfg.n_classes is None:  # an LM: any ids, e.g. a minibatch of rows
            starts = starts[starts > 0]
            want = "each document"
        else:  # a classifier returns one row of logits per document 0..D-1
            want = "each document 0..D-1"
        if not bool((starts == 1).all()):
            raise ValueError(
                f"expected {want} to be one contiguous run of tokens in one row, "
                f"got run counts {starts.tolist()[:8]} (first 8 documents)"
            )
        return pads

    def _check(self, idx: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> None:
        for name, t in (("idx", idx), ("padding_mask", padding_mask)):
            if t is not None and not isinstance(t, torch.Tensor):
                raise TypeError(
                    f"expected {name} to be a torch.Tensor, got {type(t).__name__} "
                    "(convert with torch.tensor(...))"
                )
        if idx.dim() != 2 or idx.dtype != torch.long:
            raise ValueError(
                "expected token ids of shape (B, T) and dtype long, "
                f"got {tuple(idx.shape)} {idx.dtype}"
            )
        if idx.shape[1] > self.cfg.block_size:
            raise ValueError(
                f"expected T <= block_size={self.cfg.block_size}, got T={idx.shape[1]}"
            )
        if idx.numel() and (
            int(idx.min()) < 0 or int(idx.max()) >= self.cfg.vocab_size
        ):
            raise ValueError(
                f"expected token ids in [0, {self.cfg.vocab_size}), "
                f"got range [{int(idx.min())}, {int(idx.max())}]"
            )
        if padding_mask is not None:
            if padding_mask.dtype != torch.bool or padding_mask.shape != idx.shape:
                raise ValueError(
                    f"expected a bool padding_mask of shape {tuple(idx.shape)}, "
                    f"got {padding_mask.dtype} of shape {tuple(padding_mask.shape)}"
                )
            if bool(padding_mask.all(dim=1).any()):
                raise ValueError(
                    "expected every sequence to have at least one real token, "
                    "got an all-padding row"
                )

    def num_params(self) -> int:
        """The number of parameters."""
        return sum(p.numel() for p in self.parameters())


def _drop_position_table(
    module: nn.Module, state_dict: dict, prefix: str, *args: object
) -> None:
    """Load hook: a model without a position table ignores a stored ``pos_emb``.

    A state dict that holds a (never trained) ``pos_emb`` for a rotary or "none"
    model loads strictly.
    """
    if getattr(module, "pos_emb", None) is None:
        state_dict.pop(prefix + "pos_emb.weight", None)
