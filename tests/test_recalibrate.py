"""Tests for lnbn_utils.recalibrate: population statistics for BN layers."""

import pytest
import torch

import lnbn_utils as lu

C = 6


def test_recalibrated_bn_uses_the_population_statistics():
    torch.manual_seed(0)
    bn = lu.TokenBatchNorm(C)  # running stats still at their start: 0 and 1
    x = torch.randn(4, 5, C) * 3 + 2
    ratios = lu.recalibrate_bn(torch.nn.Sequential(bn), [(x, x)])
    flat = x.reshape(-1, C)
    torch.testing.assert_close(bn.running_mean, flat.mean(0))
    torch.testing.assert_close(bn.running_var, flat.var(0))
    assert ratios == [pytest.approx(float(flat.var(0).mean()), rel=1e-5)]
    bn.eval()
    y = bn(x).reshape(-1, C)  # eval mode now standardizes the population
    torch.testing.assert_close(y.mean(0), torch.zeros(C), atol=1e-5, rtol=0)


def test_recalibration_excludes_padding_and_goes_layer_by_layer():
    torch.manual_seed(0)
    model = lu.build_char_lm(10, 8, "masked_batch", n_layer=2, n_embd=8)
    x = torch.randint(1, 10, (3, 8))
    pad = torch.zeros(3, 8, dtype=torch.bool)
    pad[0, 5:] = True
    y = torch.where(pad, -100, x)
    before = [m.running_var.clone() for m in lu.bn_layers(model)]
    ratios = lu.recalibrate_bn(model, [(x, y, pad)])
    assert len(ratios) == len(before) == 5 and model.training  # mode restored
    # the same real tokens with different pad ids give the same statistics
    x2 = x.masked_fill(pad, 7)
    stats = [
        (m.running_mean.clone(), m.running_var.clone()) for m in lu.bn_layers(model)
    ]
    lu.recalibrate_bn(model, [(x2, y, pad)])
    for (mean, var), m in zip(stats, lu.bn_layers(model)):
        torch.testing.assert_close(m.running_mean, mean)
        torch.testing.assert_close(m.running_var, var)


def test_recalibration_leaves_weights_and_mode():
    model = lu.build_char_lm(10, 8, "batch", n_layer=1, n_embd=8).train()
    w = [p.clone() for p in model.parameters()]
    lu.recalibrate_bn(model, [(torch.randint(0, 10, (2, 8)), None)])
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(w, model.parameters()))


def test_recalibrate_rejects_bad_input():
    with pytest.raises(ValueError, match="BatchNorm-like"):
        lu.recalibrate_bn(lu.build_char_lm(10, 8, "layer", n_layer=1), [(None, None)])
    model = lu.build_char_lm(10, 8, "batch", n_layer=1)
    with pytest.raises(ValueError, match="at least one batch"):
        lu.recalibrate_bn(model, [])
    with pytest.raises(TypeError, match="list of batches"):
        lu.recalibrate_bn(model, torch.zeros(2, 8))
    with pytest.raises(TypeError, match="inputs, targets"):
        lu.recalibrate_bn(model, [torch.zeros(2, 8)])
