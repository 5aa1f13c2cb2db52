"""Fold norms into the adjacent Linear layers for inference (chapter 4).

At inference a BatchNorm uses its running statistics, so it is a fixed
per-channel affine map ``y = scale * x + shift`` with

    scale = weight / sqrt(running_var + eps),   shift = bias - scale * running_mean

(Ioffe & Szegedy, 2015). An affine map next to a Linear layer is absorbed into
that layer's weight and bias, and the BatchNorm disappears from the network.
LayerNorm cannot be folded away: its statistics come from the token being
normalized, so it is not affine in x (``LN(2 x) = LN(x)``). Only part of it folds:
its ``gamma`` and ``beta`` into the next Linear, and, in a pre-norm model, its
mean subtraction into the layers that write the residual stream (once every
writer's output has zero mean over channels, LayerNorm equals RMSNorm; the
LayerNorm-to-RMSNorm conversion of Ashkboos et al., 2024, SliceGPT). A per-token
RMS normalization is what remains at inference.

Both orders are covered:

* ``fold_linear_bn``: Linear, then BN (a post-norm layer, a conv-BN block);
* ``fold_bn_linear``: BN, then Linear (the pre-norm block: the norm feeds ``qkv``
  and the first MLP layer).

``fold_layernorm_model`` does the partial fold for LayerNorm.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .models import TinyTransformer
from .norms import TORCH_BATCH_NORMS, BatchStatsNorm, NoNorm, RMSNorm

__all__ = [
    "bn_scale_shift",
    "fold_linear_bn",
    "fold_bn_linear",
    "fold_batchnorm_model",
    "is_foldable_batchnorm",
    "fold_ln_affine",
    "fold_layernorm_model",
]


def is_foldable_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` in eval mode is the per-channel map ``bn_scale_shift`` reads.

    True for PyTorch's public BatchNorm classes (``TORCH_BATCH_NORMS``, so also
    ``TokenBatchNorm``) and for every ``lu.BatchStatsNorm`` (the documented BN-like
    contract: eval mode normalizes with ``running_mean``, ``running_var`` and
    ``eps``, then applies ``weight``/``bias``): ``MaskedBatchNorm``,
    ``RegularizedBatchNorm``, ``BatchRenorm``, ``GhostBatchNorm``,
    ``PositionBatchNorm``. No private PyTorch type is consulted.
    """
    return isinstance(module, TORCH_BATCH_NORMS) or isinstance(module, BatchStatsNorm)


def bn_scale_shift(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as a per-channel affine map: ``(scale, shift)``, (C,) each.

    Accepts what ``is_foldable_batchnorm`` accepts: ``nn.BatchNorm1d/2d/3d``,
    ``nn.SyncBatchNorm`` (so ``TokenBatchNorm``) and every ``lu.BatchStatsNorm``
    (``MaskedBatchNorm`` and the other BN kinds); the layer must track running
    statistics. A missing weight/bias counts as 1/0.
    """
    if not is_foldable_batchnorm(bn):
        raise ValueError(
            "expected a BatchNorm layer (nn.BatchNorm1d/2d/3d, nn.SyncBatchNorm or a "
            f"lu.BatchStatsNorm such as MaskedBatchNorm), got {type(bn).__name__}"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            "expected a BatchNorm with running statistics "
            "(track_running_stats=True), got none"
        )
    with torch.no_grad():
        weight, bias = getattr(bn, "weight", None), getattr(bn, "bias", None)
        weight = weight if weight is not None else torch.ones_like(bn.running_var)
        bias = bias if bias is not None else torch.zeros_like(bn.running_mean)
        scale = weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
        shift = bias - scale * bn.running_mean  # (C,)
    return scale.detach().clone(), shift.detach().clone()


def _check_linear(linear: nn.Module, dim: str, expected: int) -> None:
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"expected an nn.Linear, got {type(linear).__name__}")
    got = getattr(linear, dim)
    if got != expected:
        raise ValueError(
            f"expected a Linear with {dim}={expected} (the norm's channels), "
            f"got {dim}={got}"
        )


def _new_linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    out = nn.Linear(
        weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(bias)
    return out


def fold_linear_bn(linear: nn.Linear, bn: nn.Module) -> nn.Linear:
    """One Linear equal to ``bn(linear(x))`` with ``bn`` in eval mode (Linear, then BN).

    ``s * (W x + b) + t = (s[:, None] * W) x + (s * b + t)``.

    Shape: ``linear`` maps (..., C_in) -> (..., C); ``bn`` has C channels.

    Example:
        >>> lin, bn = nn.Linear(4, 3), nn.BatchNorm1d(3).eval()
        >>> fold_linear_bn(lin, bn)(torch.ones(2, 4)).shape
        torch.Size([2, 3])
    """
    scale, shift = bn_scale_shift(bn)
    _check_linear(linear, "out_features", scale.numel())
    with torch.no_grad():
        b = (
            linear.bias
            if linear.bias is not None
            else linear.weight.new_zeros(linear.out_features)
        )
        return _new_linear(scale[:, None] * linear.weight, scale * b + shift)


def fold_bn_linear(bn: nn.Module, linear: nn.Linear) -> nn.Linear:
    """One Linear equal to ``linear(bn(x))``, ``bn`` in eval mode (BN, then Linear).

    ``W (s * x + t) + b = (W * s[None, :]) x + (W t + b)``.

    Shape: ``bn`` has C channels; ``linear`` maps (..., C) -> (..., C_out).
    """
    scale, shift = bn_scale_shift(bn)
    _check_linear(linear, "in_features", scale.numel())
    with torch.no_grad():
        b = (
            linear.bias
            if linear.bias is not None
            else linear.weight.new_zeros(linear.out_features)
        )
        return _new_linear(linear.weight * scale[None, :], linear.weight @ shift + b)


def fold_batchnorm_model(model: TinyTransformer) -> TinyTransformer:
    """An eval-mode copy of a pre-norm BatchNorm ``TinyTransformer``, every norm folded.

    In a pre-norm block each norm feeds exactly one Linear (``norm1`` -> ``attn.qkv``,
    ``norm2`` -> ``mlp[0]``, ``norm_f`` -> ``head``), so every norm is absorbed and
    replaced by ``NoNorm``. A post-norm BatchNorm also feeds the residual stream and
    cannot be removed this way. Only for language-model heads (``n_classes=None``):
    a classifier pools between ``norm_f`` and ``head`` (still affine; kept simple here).
    """
    cfg = getattr(model, "cfg", None)
    if not isinstance(model, TinyTransformer) or cfg is None:
        raise ValueError(f"expected a TinyTransformer, got {type(model).__name__}")
    if cfg.norm_position != "pre" or cfg.n_classes is not None:
        raise ValueError(
            "expected a pre-norm language model (norm_position='pre', n_classes=None), "
            f"got norm_position={cfg.norm_position!r}, n_classes={cfg.n_classes!r}"
        )
    folded = copy.deepcopy(model).eval()
    pairs = [(blk, "norm1", blk.attn, "qkv") for blk in folded.blocks]
    pairs += [(blk, "norm2", blk.mlp, "0") for blk in folded.blocks]
    pairs += [(folded, "norm_f", folded, "head")]
    for owner, norm_name, lin_owner, lin_name in pairs:
        norm = getattr(owner, norm_name)
        if not is_foldable_batchnorm(norm):
            raise ValueError(
                "expected BatchNorm layers (cfg.norm 'batch', 'masked_batch' or "
                f"another lu.BatchStatsNorm kind), got {type(norm).__name__}"
            )
        lin_owner._modules[lin_name] = fold_bn_linear(
            norm, lin_owner._modules[lin_name]
        )
        setattr(owner, norm_name, NoNorm(norm.num_features))
    return folded


def fold_ln_affine(ln: nn.LayerNorm, linear: nn.Linear) -> nn.Linear:
    """``new`` with ``linear(ln(x)) == new(F.layer_norm(x, (C,), eps=ln.eps))``.

    LayerNorm's affine part is a per-channel map, ``gamma * x_hat + beta``, so it folds
    like BN's (``W (gamma * x_hat + beta) + b = (W diag(gamma)) x_hat + (W beta + b)``);
    the normalization ``x_hat`` itself depends on x and stays.
    """
    if not isinstance(ln, nn.LayerNorm) or len(ln.normalized_shape) != 1:
        raise ValueError(f"expected an nn.LayerNorm over one dim, got {ln!r}")
    (C,) = ln.normalized_shape
    _check_linear(linear, "in_features", C)
    with torch.no_grad():
        gamma = ln.weight if ln.weight is not None else torch.ones(C)
        beta = ln.bias if ln.bias is not None else torch.zeros(C)
        b = (
            linear.bias
            if linear.bias is not None
            else linear.weight.new_zeros(linear.out_features)
        )
        return _new_linear(linear.weight * gamma[None, :], linear.weight @ beta + b)


def _center_rows(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """In place: make ``weight @ a + bias`` have zero mean over the output channels."""
    weight -= weight.mean(dim=0, keepdim=True)  # (C_out, C_in): every column sums to 0
    if bias is not None:
        bias -= bias.mean()


def fold_layernorm_model(model: TinyTransformer) -> TinyTransformer:
    """An eval-mode copy of a pre-norm LayerNorm ``TinyTransformer``: LN -> RMSNorm.

    Every layer that writes the residual stream (token and position embeddings, the
    attention output projection, the MLP's last Linear) is centered so that its output
    has zero mean over channels; then every token of the stream has zero mean, and
    LayerNorm's mean subtraction does nothing. Each LayerNorm becomes an RMSNorm with
    weight 1 and the same eps, and its ``gamma``, ``beta`` fold into the Linear it
    feeds (``fold_ln_affine``). Same function, up to float rounding; what remains at
    inference is one RMS reduction per token and norm (SliceGPT, Ashkboos et al. 2024).
    """
    cfg = getattr(model, "cfg", None)
    if not isinstance(model, TinyTransformer) or cfg is None:
        raise ValueError(f"expected a TinyTransformer, got {type(model).__name__}")
    if cfg.norm != "layer" or cfg.norm_position != "pre" or cfg.n_classes is not None:
        raise ValueError(
            "expected a pre-norm LayerNorm language model (norm='layer', "
            f"norm_position='pre', n_classes=None), got norm={cfg.norm!r}, "
            f"norm_position={cfg.norm_position!r}, n_classes={cfg.n_classes!r}"
        )
    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for emb in (folded.tok_emb, folded.pos_emb):  # (rows, C): center each row
            if emb is not None:  # no position table with rotary or "none" positions
                emb.weight -= emb.weight.mean(dim=1, keepdim=True)
        for blk in folded.blocks:
            _center_rows(blk.attn.proj.weight, blk.attn.proj.bias)
            _center_rows(blk.mlp[2].weight, blk.mlp[2].bias)
    pairs = [(blk, "norm1", blk.attn, "qkv") for blk in folded.blocks]
    pairs += [(blk, "norm2", blk.mlp, "0") for blk in folded.blocks]
    pairs += [(folded, "norm_f", folded, "head")]
    for owner, norm_name, lin_owner, lin_name in pairs:
        ln = getattr(owner, norm_name)
        lin_owner._modules[lin_name] = fold_ln_affine(ln, lin_owner._modules[lin_name])
        setattr(owner, norm_name, RMSNorm(ln.normalized_shape[0], eps=ln.eps))
    return folded
