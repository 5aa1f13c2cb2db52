"""Recalibration: give BatchNorm layers the population statistics of their inputs."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

__all__ = ["bn_layers", "recalibrate_bn"]


def bn_layers(model: nn.Module) -> list[nn.Module]:
    """Every submodule with ``running_mean`` and ``running_var`` buffers, in order."""
    return [
        m
        for m in model.modules()
        if isinstance(getattr(m, "running_mean", None), torch.Tensor)
        and isinstance(getattr(m, "running_var", None), torch.Tensor)
    ]


def _check_batches(batches: Sequence[tuple]) -> None:
    if not isinstance(batches, (list, tuple)):
        raise TypeError(f"expected a list of batches, got {type(batches).__name__}")
    if len(batches) == 0:
        raise ValueError("expected at least one batch to recalibrate on, got none")
    for b in batches:
        if not isinstance(b, (list, tuple)) or len(b) not in (2, 3):
            raise TypeError(
                "expected each batch to be (inputs, targets) or "
                f"(inputs, targets, padding_mask), got {type(b).__name__}"
            )


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Sequence[tuple]) -> list[float]:
    """Set each BN layer's running statistics to the population statistics of its input.

    Layer by layer, in the order of ``bn_layers`` (for ``TinyTransformer``, the order
    of the forward pass): the model runs in eval mode over all ``batches``, the
    layer's input is collected over real tokens (padding excluded), and its
    ``running_mean`` / ``running_var`` become that input's mean and unbiased
    variance per channel. The next layer then sees inputs computed with the
    recalibrated statistics. Nothing else changes (weights, momentum, modes).

    Args:
        model: a model called as ``model(inputs)`` or ``model(inputs, padding_mask)``.
        batches: (inputs (B, T), targets (B, T)[, padding_mask (B, T) bool, True =
            pad]) tuples, e.g. validation or training batches.

    Returns: per layer, the mean over channels of population variance / old
    running variance (how far the running variance was from the population's).
    """
    _check_batches(batches)
    layers = bn_layers(model)
    if not layers:
        raise ValueError(
            "expected a model with BatchNorm-like layers (running_mean and "
            f"running_var buffers), got {type(model).__name__} with none"
        )
    was_training = model.training
    model.eval()
    ratios = []
    try:
        for layer in layers:
            feats: list[torch.Tensor] = []

            def grab(_, args, feats=feats):
                x, pad = args[0], args[1] if len(args) > 1 else None
                real = x if pad is None else x[~pad]  # (N, C) real tokens
                feats.append(real.reshape(-1, x.shape[-1]).float())

            hook = layer.register_forward_pre_hook(grab)
            try:
                for b in batches:
                    model(b[0], b[2]) if len(b) == 3 else model(b[0])
            finally:
                hook.remove()
            f = torch.cat(feats)  # (N, C)
            var = f.var(0, unbiased=True)
            ratios.append(float((var / layer.running_var.float()).mean()))
            layer.running_mean.copy_(f.mean(0))
            layer.running_var.copy_(var)
    finally:
        model.train(was_training)
    return ratios
