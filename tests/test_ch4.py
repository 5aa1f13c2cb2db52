"""Chapter 4 helpers: saved-bytes breakdown and formula, written bytes, timing, BatchNorm folding."""
import pytest
import torch
import torch.nn as nn

import lnbn_utils as lu


def _trained_bn(C: int, kind: str = "batch", seed: int = 0) -> nn.Module:
    """A BN layer with non-trivial running statistics, weight and bias, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    bn = lu.make_norm(kind, C)
    with torch.no_grad():
        for _ in range(5):
            bn(torch.randn(4, 8, C, generator=g) * 3 + 1)
        bn.weight.copy_(torch.rand(C, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(C, generator=g))
    return bn.eval()


# --- saved bytes -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["layer", "batch", "masked_batch", "rms", "none"])
@pytest.mark.parametrize("shape", [(2, 3, 4), (8, 64, 128), (1, 16, 256), (5, 7, 2)])
def test_breakdown_matches_formula_and_total(kind, shape):
    B, T, C = shape
    x = torch.randn(B, T, C, requires_grad=True)
    norm = lu.make_norm(kind, C)
    # masked BN's formula is for a padded batch (without a mask it saves what BN saves)
    mask = lu.lengths_to_padding_mask([T - 1] + [T] * (B - 1), T) if kind == "masked_batch" else None
    got = lu.saved_tensor_breakdown(norm, x, mask)
    assert got == lu.saved_bytes_formula(kind, B, T, C)
    assert sum(got.values()) == lu.saved_tensor_bytes(lambda t: norm(t, mask), x)
    assert tuple(got) == lu.SAVED_CATEGORIES


def test_breakdown_with_padding_mask_and_torch_rmsnorm():
    B, T, C = 4, 10, 32
    x = torch.randn(B, T, C, requires_grad=True)
    mask = lu.lengths_to_padding_mask(torch.tensor([10, 7, 3, 5]), T)
    assert lu.saved_tensor_breakdown(lu.MaskedBatchNorm(C), x, mask) == lu.saved_bytes_formula("masked_batch", B, T, C)
    # nn.RMSNorm on the CPU is not a fused kernel: it saves what lu.RMSNorm saves
    assert lu.saved_tensor_breakdown(nn.RMSNorm(C), x) == lu.saved_bytes_formula("rms", B, T, C)


def test_formula_float64_doubles_float_values():
    f32, f64 = lu.saved_bytes_formula("layer", 2, 3, 4), lu.saved_bytes_formula("layer", 2, 3, 4, bytes_per_value=8)
    assert all(f64[k] == 2 * f32[k] for k in f32)
    m32, m64 = (lu.saved_bytes_formula("masked_batch", 2, 3, 4, bytes_per_value=b) for b in (4, 8))
    assert all(m64[k] == 2 * m32[k] for k in m32)


@pytest.mark.parametrize("bad", [dict(kind="group"), dict(B=0), dict(C=2.0), dict(bytes_per_value=0)])
def test_formula_rejects_bad_input(bad):
    args = dict(kind="layer", B=2, T=3, C=4) | bad
    with pytest.raises(ValueError, match="expected"):
        lu.saved_bytes_formula(**args)


def test_breakdown_rejects_bad_input():
    with pytest.raises(ValueError, match="nn.Module"):
        lu.saved_tensor_breakdown(lambda x: x, torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="torch.Tensor"):
        lu.saved_tensor_breakdown(lu.LayerNorm(2), [[0.0, 1.0]])


# --- written bytes and timing ------------------------------------------------------


def test_written_bytes_counts_new_storages_only():
    x = torch.randn(3, 5)
    with torch.no_grad():
        assert lu.written_bytes(nn.Linear(5, 7), x) == 3 * 7 * 4
        assert lu.written_bytes(lambda t: t.t().reshape(-1)[:4], x) == 3 * 5 * 4  # t() is a view; reshape copies
        assert lu.written_bytes(lambda t: t.view(15).mul_(2), x.clone()) == 0  # view, then in place
        assert lu.written_bytes(lambda t: t * 2 + 1, x) == 2 * 15 * 4
    with pytest.raises(ValueError, match="callable"):
        lu.written_bytes(3)


def test_median_time_is_positive_and_validates():
    assert lu.median_time(lambda: sum(range(100)), repeats=3, min_seconds=1e-4) > 0
    with pytest.raises(ValueError, match="repeats"):
        lu.median_time(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="callable"):
        lu.median_time(None)


# --- folding -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["batch", "masked_batch"])
def test_bn_scale_shift_is_the_eval_mode_bn(kind):
    bn = _trained_bn(16, kind)
    x = torch.randn(3, 5, 16)
    scale, shift = lu.bn_scale_shift(bn)
    with torch.no_grad():
        torch.testing.assert_close(x * scale + shift, bn(x))


@pytest.mark.parametrize("kind", ["batch", "masked_batch"])
def test_fold_linear_then_bn(kind):
    lin, bn = nn.Linear(12, 16), _trained_bn(16, kind)
    x = torch.randn(3, 5, 12)
    folded = lu.fold_linear_bn(lin, bn)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), bn(lin(x)))
    assert isinstance(folded, nn.Linear) and folded.weight.shape == (16, 12)


@pytest.mark.parametrize("kind", ["batch", "masked_batch"])
def test_fold_bn_then_linear(kind):
    bn, lin = _trained_bn(16, kind), nn.Linear(16, 9)
    x = torch.randn(3, 5, 16)
    folded = lu.fold_bn_linear(bn, lin)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), lin(bn(x)))
    assert folded.weight.shape == (9, 16)


def test_fold_without_linear_bias_and_without_bn_affine():
    lin = nn.Linear(6, 4, bias=False)
    bn = nn.BatchNorm1d(4, affine=False)
    with torch.no_grad():
        bn(torch.randn(32, 4) * 2 + 3)
    bn.eval()
    x = torch.randn(10, 6)
    with torch.no_grad():
        torch.testing.assert_close(lu.fold_linear_bn(lin, bn)(x), bn(lin(x)))
        bn2 = nn.BatchNorm1d(6, affine=False)
        bn2(torch.randn(32, 6) - 1)
        bn2.eval()
        torch.testing.assert_close(lu.fold_bn_linear(bn2, lin)(x), lin(bn2(x)))


def test_fold_does_not_touch_the_originals():
    lin, bn = nn.Linear(4, 4), _trained_bn(4)
    w = lin.weight.detach().clone()
    lu.fold_linear_bn(lin, bn)
    lu.fold_bn_linear(bn, lin)
    assert torch.equal(lin.weight, w)


def test_fold_rejects_bad_input():
    with pytest.raises(ValueError, match="BatchNorm"):
        lu.fold_linear_bn(nn.Linear(4, 4), lu.LayerNorm(4))
    with pytest.raises(ValueError, match="running statistics"):
        lu.bn_scale_shift(nn.BatchNorm1d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="out_features=4"):
        lu.fold_linear_bn(nn.Linear(4, 3), nn.BatchNorm1d(4).eval())
    with pytest.raises(ValueError, match="in_features=4"):
        lu.fold_bn_linear(nn.BatchNorm1d(4).eval(), nn.Linear(3, 4))
    with pytest.raises(ValueError, match="nn.Linear"):
        lu.fold_bn_linear(nn.BatchNorm1d(4).eval(), nn.Conv1d(4, 4, 1))


@pytest.mark.parametrize("kind", ["batch", "masked_batch"])
def test_fold_batchnorm_model_matches_and_removes_every_norm(kind):
    torch.manual_seed(0)
    cfg = lu.TransformerConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, norm=kind)
    model = lu.TinyTransformer(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(5):  # give the running statistics non-trivial values
            model(torch.randint(0, 11, (4, 8), generator=g))
    model.eval()
    folded = lu.fold_batchnorm_model(model)
    idx = torch.randint(0, 11, (3, 8), generator=g)
    mask = lu.lengths_to_padding_mask(torch.tensor([8, 5, 2]), 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(idx), model(idx), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(folded(idx, mask), model(idx, mask), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, (nn.BatchNorm1d, lu.MaskedBatchNorm)) for m in folded.modules())
    assert not list(folded.buffers()) and not folded.training
    assert folded.num_params() == model.num_params() - 2 * 8 * (2 * 2 + 1)
    assert any(isinstance(m, nn.BatchNorm1d) or isinstance(m, lu.MaskedBatchNorm) for m in model.modules())


def test_fold_batchnorm_model_rejects_what_it_cannot_fold():
    for cfg in (
        lu.TransformerConfig(norm="layer"),
        lu.TransformerConfig(norm="batch", norm_position="post"),
        lu.TransformerConfig(norm="batch", n_classes=2, causal=False),
    ):
        with pytest.raises(ValueError, match="expected"):
            lu.fold_batchnorm_model(lu.TinyTransformer(cfg))
    with pytest.raises(ValueError, match="TinyTransformer"):
        lu.fold_batchnorm_model(nn.Linear(2, 2))


def test_time_ratio_orders_a_slow_and_a_fast_function():
    x = torch.randn(256, 256)
    fast, slow = (lambda: x[0, 0] + 1), (lambda: x @ x @ x)  # ~1 op vs ~33 MFLOP: a 1000x gap
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert lu.time_ratio(slow, fast, repeats=5) > 5.0
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="callables"):
        lu.time_ratio(fast, None)
    with pytest.raises(ValueError, match="repeats"):
        lu.time_ratio(fast, fast, repeats=0)
