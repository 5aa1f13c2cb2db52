"""lnbn_utils.folding: BatchNorm's full fold and LayerNorm's partial fold."""

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


# every registered kind that follows the BN-like contract (eval: running statistics)
FOLDABLE_KINDS = [
    "batch", "ghost_batch", "masked_batch", "position_batch", "rbn", "renorm",
]  # fmt: skip
UNFOLDABLE_KINDS = ["dyt", "layer", "none", "power", "power_simple", "rms"]


def test_the_foldable_and_unfoldable_kinds_cover_the_registry():
    assert sorted(FOLDABLE_KINDS + UNFOLDABLE_KINDS) == sorted(lu.NORM_KINDS)


@pytest.mark.parametrize("kind", FOLDABLE_KINDS)
def test_fold_batchnorm_model_matches_and_removes_every_norm(kind):
    torch.manual_seed(0)
    cfg = lu.TransformerConfig(
        vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, norm=kind
    )
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
        torch.testing.assert_close(
            folded(idx, mask), model(idx, mask), rtol=1e-4, atol=1e-5
        )
    assert not any(lu.is_foldable_batchnorm(m) for m in folded.modules())
    assert not list(folded.buffers()) and not folded.training
    assert folded.num_params() == model.num_params() - 2 * 8 * (2 * 2 + 1)
    n_norms = sum(lu.is_foldable_batchnorm(m) for m in model.modules())
    assert n_norms == 2 * 2 + 1, n_norms  # the original keeps its norms


def test_fold_batchnorm_model_rejects_what_it_cannot_fold():
    for kind in UNFOLDABLE_KINDS:
        model = lu.TinyTransformer(lu.TransformerConfig(norm=kind))
        with pytest.raises(ValueError, match="expected BatchNorm layers .*got"):
            lu.fold_batchnorm_model(model)
    for cfg in (
        lu.TransformerConfig(norm="layer"),
        lu.TransformerConfig(norm="batch", norm_position="post"),
        lu.TransformerConfig(norm="batch", n_classes=2, causal=False),
    ):
        with pytest.raises(ValueError, match="expected"):
            lu.fold_batchnorm_model(lu.TinyTransformer(cfg))
    with pytest.raises(ValueError, match="TinyTransformer"):
        lu.fold_batchnorm_model(nn.Linear(2, 2))


def test_fold_ln_affine_keeps_only_the_normalization():
    C = 12
    ln, lin = nn.LayerNorm(C), nn.Linear(C, 5)
    with torch.no_grad():
        ln.weight.normal_(1, 0.3)
        ln.bias.normal_(0, 0.3)
    x = torch.randn(3, 4, C) * 2 + 1
    new = lu.fold_ln_affine(ln, lin)
    with torch.no_grad():
        torch.testing.assert_close(
            new(torch.nn.functional.layer_norm(x, (C,))), lin(ln(x))
        )
    with pytest.raises(ValueError, match="in_features=12"):
        lu.fold_ln_affine(ln, nn.Linear(5, 5))
    with pytest.raises(ValueError, match="LayerNorm"):
        lu.fold_ln_affine(nn.BatchNorm1d(C), lin)


def test_fold_layernorm_model_is_an_rmsnorm_model_with_the_same_function():
    torch.manual_seed(0)
    cfg = lu.TransformerConfig(
        vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8
    )
    model = lu.TinyTransformer(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
        model.tok_emb.weight.add_(0.7)  # a stream far from zero mean
    model.eval()
    folded = lu.fold_layernorm_model(model)
    idx = torch.randint(0, 11, (3, 8))
    with torch.no_grad():
        torch.testing.assert_close(folded(idx), model(idx), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, nn.LayerNorm) for m in folded.modules())
    assert sum(isinstance(m, lu.RMSNorm) for m in folded.modules()) == 2 * 2 + 1
    with pytest.raises(ValueError, match="LayerNorm"):
        lu.fold_layernorm_model(lu.TinyTransformer(lu.TransformerConfig(norm="batch")))


# --- which layers fold: public classes and the BatchStatsNorm protocol --------------


class DuckBatchNorm(nn.Module):
    """BN-like, subclassing no BatchNorm: it has only the BatchStatsNorm contract."""

    def __init__(self, C):
        super().__init__()
        self.eps = 1e-3
        self.weight = nn.Parameter(torch.rand(C) + 0.5)
        self.bias = nn.Parameter(torch.randn(C))
        self.register_buffer("running_mean", torch.randn(C))
        self.register_buffer("running_var", torch.rand(C) + 0.5)

    def batch_stats(self, x, padding_mask=None):
        flat = x.reshape(-1, x.shape[-1])
        return flat.mean(0), flat.var(0, unbiased=False), torch.tensor(flat.shape[0])

    def forward(self, x, padding_mask=None):  # eval mode only, for the test
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        return (x - self.running_mean) * scale + self.bias


def test_is_foldable_batchnorm_accepts_public_classes_and_the_protocol():
    C = 4
    yes = [
        nn.BatchNorm1d(C), nn.BatchNorm2d(C), nn.BatchNorm3d(C), nn.SyncBatchNorm(C),
        lu.TokenBatchNorm(C), lu.SyncTokenBatchNorm(C), DuckBatchNorm(C),
    ]  # fmt: skip
    yes += [lu.make_norm(kind, C) for kind in FOLDABLE_KINDS]
    no = [nn.LayerNorm(C), nn.GroupNorm(2, C), nn.InstanceNorm1d(C), nn.Linear(C, C)]
    no += [lu.make_norm(kind, C) for kind in UNFOLDABLE_KINDS]
    no += [nn.LazyBatchNorm1d()]  # no running statistics until its first input
    for m in yes:
        assert lu.is_foldable_batchnorm(m), type(m).__name__
    for m in no:
        assert not lu.is_foldable_batchnorm(m), type(m).__name__
        with pytest.raises(ValueError, match="expected a BatchNorm layer .*got"):
            lu.bn_scale_shift(m)


def test_a_duck_typed_batch_stats_norm_folds():
    torch.manual_seed(0)
    bn, lin = DuckBatchNorm(6).eval(), nn.Linear(6, 3)
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(lu.fold_bn_linear(bn, lin)(x), lin(bn(x)))
        torch.testing.assert_close(
            lu.fold_linear_bn(nn.Linear(3, 6), bn)(x[..., :3]).shape, (2, 5, 6)
        )


def test_bn_scale_shift_of_batchnorm2d_is_its_eval_map():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn(torch.randn(4, 3, 5, 5) * 2 + 1)
    bn.eval()
    x = torch.randn(2, 3, 4, 4)  # (N, C, H, W): channels second
    scale, shift = lu.bn_scale_shift(bn)
    with torch.no_grad():
        torch.testing.assert_close(
            x * scale[:, None, None] + shift[:, None, None], bn(x)
        )


@pytest.mark.parametrize("kind", FOLDABLE_KINDS)
def test_bn_scale_shift_is_the_eval_mode_map_of_every_foldable_kind(kind):
    bn = _trained_bn(8, kind)
    x = torch.randn(4, 6, 8)
    scale, shift = lu.bn_scale_shift(bn)
    with torch.no_grad():
        torch.testing.assert_close(x * scale + shift, bn(x))
