"""Tests for lnbn_utils.probes: fluctuation, batch sampling, TID, recorder, null."""

import copy

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import lnbn_utils as lu

# --- PowerNorm's fluctuation ----------------------------------------------------------


def test_stat_distance_by_hand():
    zero, one = torch.zeros(4), torch.ones(4)
    d_mean, d_var = lu.stat_distance(
        torch.tensor([3.0, 4.0, 0.0, 0.0]), torch.full((4,), 2.0), zero, one
    )
    assert d_mean == pytest.approx(5.0 / 4)  # ||(3, 4, 0, 0)|| / C
    assert d_var == pytest.approx(2.0 / 4)  # ||(1, 1, 1, 1)|| / C


def test_stat_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected four"):
        lu.stat_distance(torch.zeros(3), torch.zeros(4), torch.zeros(4), torch.zeros(4))


def test_powernorm_fluctuation_matches_stat_distance_per_batch():
    g = torch.Generator().manual_seed(0)
    batches = torch.randn(5, 7, 3, generator=g) * 2 + 1  # (K, N, C)
    mean, var = torch.randn(3, generator=g), torch.rand(3, generator=g) + 0.5
    per_batch = [
        lu.stat_distance(b.mean(0), b.var(0, unbiased=False), mean, var)
        for b in batches
    ]
    d_mean, d_var = lu.powernorm_fluctuation(batches, mean, var)
    assert d_mean == pytest.approx(sum(p[0] for p in per_batch) / 5)
    assert d_var == pytest.approx(sum(p[1] for p in per_batch) / 5)


def test_powernorm_fluctuation_is_zero_when_every_batch_has_the_reference_statistics():
    mean, std = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    batch = torch.stack(
        [mean - std, mean + std]
    )  # (2, C): mean `mean`, biased var std^2
    d_mean, d_var = lu.powernorm_fluctuation(batch.expand(4, 2, 2), mean, std**2)
    assert d_mean == pytest.approx(0.0, abs=1e-7) and d_var == pytest.approx(
        0.0, abs=1e-6
    )


@pytest.mark.parametrize("shape", [(7, 3), (4, 1, 3)])
def test_powernorm_fluctuation_rejects_bad_batches(shape):
    with pytest.raises(ValueError, match=r"\(K, N, C\)"):
        lu.powernorm_fluctuation(torch.zeros(shape), torch.zeros(3), torch.ones(3))


def test_powernorm_fluctuation_shrinks_like_one_over_sqrt_n_for_iid_batches():
    g = torch.Generator().manual_seed(1)
    zero, one = torch.zeros(16), torch.ones(16)
    small = lu.powernorm_fluctuation(torch.randn(200, 16, 16, generator=g), zero, one)[
        0
    ]
    large = lu.powernorm_fluctuation(
        torch.randn(200, 1024, 16, generator=g), zero, one
    )[0]
    assert small / large == pytest.approx(8.0, rel=0.1)  # sqrt(1024 / 16)


# --- sampling token batches -----------------------------------------------------------


def test_sample_token_batches_contiguous_windows():
    feats = torch.arange(100.0)[:, None].repeat(
        1, 2
    )  # (L, C): the feature is the position
    g = torch.Generator().manual_seed(0)
    out = lu.sample_token_batches(
        feats, n_batches=3, tokens_per_batch=12, generator=g, window=4
    )
    assert out.shape == (3, 12, 2)
    windows = out[..., 0].reshape(3, 3, 4)  # (K, windows, T)
    assert (windows.diff(dim=-1) == 1).all()  # consecutive positions inside each window


def test_sample_token_batches_single_window_when_batch_is_shorter():
    feats = torch.arange(50.0)[:, None]
    out = lu.sample_token_batches(
        feats, 2, 5, torch.Generator().manual_seed(0), window=32
    )
    assert out.shape == (2, 5, 1) and (out[..., 0].diff(dim=-1) == 1).all()


def test_sample_token_batches_iid_draws_positions_independently():
    feats = torch.arange(10_000.0)[:, None]
    out = lu.sample_token_batches(feats, 1, 1000, torch.Generator().manual_seed(0))
    steps = out[0, :, 0].diff()
    assert out.shape == (1, 1000, 1) and (steps == 1).float().mean() < 0.01


def test_sample_token_batches_is_reproducible():
    feats = torch.randn(300, 4)
    a = lu.sample_token_batches(
        feats, 3, 64, torch.Generator().manual_seed(5), window=16
    )
    b = lu.sample_token_batches(
        feats, 3, 64, torch.Generator().manual_seed(5), window=16
    )
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tokens_per_batch=40, window=32), "multiple"),
        (dict(tokens_per_batch=0), "tokens_per_batch >= 1"),
        (dict(tokens_per_batch=8, window=0), "multiple"),
    ],
)
def test_sample_token_batches_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lu.sample_token_batches(
            torch.zeros(100, 2), 2, generator=torch.Generator(), **kwargs
        )


def test_sample_token_batches_rejects_non_matrix_features():
    with pytest.raises(ValueError, match=r"\(L, C\)"):
        lu.sample_token_batches(torch.zeros(10), 1, 2, torch.Generator())


# --- TID ------------------------------------------------------------------------------


def test_tid_by_hand():
    # one channel: batch mean 1, std 2; running mean 0, std 4
    # -> mean-TID 1/2, std-TID |4/2 - 1| = 1
    m, s = lu.tid(
        torch.tensor([1.0]),
        torch.tensor([4.0]),
        torch.tensor([0.0]),
        torch.tensor([16.0]),
        eps=0.0,
    )
    assert m == pytest.approx(0.5) and s == pytest.approx(1.0)


def test_tid_is_zero_when_statistics_agree():
    mean, var = torch.randn(8), torch.rand(8) + 0.1
    assert lu.tid(mean, var, mean.clone(), var.clone()) == (0.0, 0.0)


def test_tid_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected four"):
        lu.tid(torch.zeros(2), torch.ones(2), torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="expected four"):
        lu.tid(torch.zeros(4, 3), torch.ones(4, 2), torch.zeros(3), torch.ones(3))


def test_tid_of_groups_is_the_mean_over_groups():
    g = torch.Generator().manual_seed(0)
    mb, vb = torch.randn(5, 3, generator=g), torch.rand(5, 3, generator=g) + 0.2
    mr, vr = torch.randn(3, generator=g), torch.rand(3, generator=g) + 0.2
    per_group = torch.tensor([lu.tid(mb[i], vb[i], mr, vr) for i in range(5)])  # (G, 2)
    assert lu.tid(mb, vb, mr, vr) == pytest.approx(tuple(per_group.mean(0).tolist()))


# --- the i.i.d. null of TID -----------------------------------------------------------


@pytest.mark.parametrize("shape, group", [((1, 8), 8), ((8, 32), 256), ((8, 32), 8)])
def test_tid_null_matches_simulation_through_the_layer(shape, group):
    g = torch.Generator().manual_seed(0)
    n = shape[0] * shape[1]
    layer = lu.TokenBatchNorm(64) if group == n else lu.GhostBatchNorm(64, group=group)
    simulated = lu.iid_tid(layer, shape, steps=300, generator=g)[0]
    assert simulated == pytest.approx(lu.tid_null(group, n, momentum=0.1), rel=0.04)


def test_tid_null_shrinks_like_one_over_sqrt_n_for_large_batches():
    assert lu.tid_null(1024, 1024) / lu.tid_null(4096, 4096) == pytest.approx(
        2.0, rel=1e-3
    )


def test_std_tid_variance_convention_at_eight_tokens():
    """The layer's own pair (biased batch var, unbiased running var): ~0.30 at n = 8."""
    g = torch.Generator().manual_seed(1)
    std_tid = lu.iid_tid(lu.TokenBatchNorm(64), (1, 8), steps=400, generator=g)[1]
    assert std_tid == pytest.approx(0.30, abs=0.02)


@pytest.mark.parametrize("args", [(2, 8), (8, 4), (8, 8, 0.0)])
def test_tid_null_rejects_bad_arguments(args):
    with pytest.raises(ValueError, match="expected 3 <= group <= n_tokens"):
        lu.tid_null(*args)


@settings(max_examples=30, deadline=None)
@given(
    scale=st.floats(0.1, 10.0),
    shift=st.floats(-5.0, 5.0),
    seed=st.integers(0, 1000),
)
def test_tid_is_invariant_to_an_affine_change_of_units(scale, shift, seed):
    """TID is in units of the batch std: an affine change of units changes nothing."""
    g = torch.Generator().manual_seed(seed)
    mb, mr = (
        torch.randn(6, generator=g, dtype=torch.float64),
        torch.randn(6, generator=g, dtype=torch.float64),
    )
    vb, vr = (
        torch.rand(6, generator=g, dtype=torch.float64) + 0.1,
        torch.rand(6, generator=g, dtype=torch.float64) + 0.1,
    )
    ref = lu.tid(mb, vb, mr, vr, eps=0.0)
    moved = lu.tid(
        scale * mb + shift, scale**2 * vb, scale * mr + shift, scale**2 * vr, eps=0.0
    )
    assert moved == pytest.approx(ref, rel=1e-9, abs=1e-12)


# --- batch statistics of a layer ------------------------------------------------------


def test_batch_stats_of_book_norms_and_plain_batchnorm():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, generator=g)  # (B, T, C)
    mean, var = lu.batch_stats_of(lu.TokenBatchNorm(4), x)
    torch.testing.assert_close(mean, x.mean(dim=(0, 1)))
    torch.testing.assert_close(var, x.var(dim=(0, 1), unbiased=False))
    xc = x.transpose(1, 2)  # nn.BatchNorm1d wants channels second: (B, C, T)
    m2, v2 = lu.batch_stats_of(nn.BatchNorm1d(4), xc)
    torch.testing.assert_close(m2, mean)
    torch.testing.assert_close(v2, var)
    img = torch.randn(2, 4, 3, 3, generator=g)  # (B, C, H, W)
    m3, v3 = lu.batch_stats_of(nn.BatchNorm2d(4), img)
    torch.testing.assert_close(m3, img.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(v3, img.var(dim=(0, 2, 3), unbiased=False))


def test_batch_stats_of_masked_batchnorm_skips_pads():
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[False, False, True, True], [False, False, False, True]])
    mean, var = lu.batch_stats_of(lu.MaskedBatchNorm(3), x, mask)
    real = x[~mask]  # (N, C)
    torch.testing.assert_close(mean, real.mean(0))
    torch.testing.assert_close(var, real.var(0, unbiased=False))


def test_batch_stats_of_plain_batchnorm3d_and_syncbatchnorm_take_channels_second():
    g = torch.Generator().manual_seed(1)
    vol = torch.randn(2, 3, 2, 2, 2, generator=g)  # (B, C, D, H, W)
    for bn in (nn.BatchNorm3d(3), nn.SyncBatchNorm(3)):
        mean, var = lu.batch_stats_of(bn, vol)
        torch.testing.assert_close(mean, vol.mean(dim=(0, 2, 3, 4)))
        torch.testing.assert_close(var, vol.var(dim=(0, 2, 3, 4), unbiased=False))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["batch", "masked_batch", "rbn", "ghost_batch"])
def test_batch_stats_of_reduced_precision_input_are_float32(kind, dtype):
    """A float32 layer computes float16/bfloat16 input's statistics in float32."""
    x = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(2)).to(dtype)
    layer = lu.make_norm(kind, 3, **({"group": 4} if kind == "ghost_batch" else {}))
    mean, var = lu.batch_stats_of(layer, x)
    mean32, var32 = lu.batch_stats_of(layer, x.float())
    assert mean.dtype == var.dtype == torch.float32
    assert torch.equal(mean, mean32) and torch.equal(var, var32)


# --- TIDRecorder ----------------------------------------------------------------------


class TwoNorms(nn.Module):
    """A toy model: a linear map and two BN-like layers, with the norm signature."""

    def __init__(self, kind: str, C: int = 4) -> None:
        super().__init__()
        self.lin = nn.Linear(C, C)
        self.n1, self.n2 = lu.make_norm(kind, C), lu.make_norm(kind, C)

    def forward(self, x, padding_mask=None):
        return self.n2(self.lin(self.n1(x, padding_mask)), padding_mask=padding_mask)


def test_recorder_matches_tid_of_the_pre_update_running_stats():
    torch.manual_seed(0)
    model = TwoNorms("batch")
    x = torch.randn(2, 6, 4) * 3 + 1
    with lu.TIDRecorder(model) as rec:
        model(x)
    # the first norm's running stats were still (0, 1) when it saw x
    expected = lu.tid(
        x.mean(dim=(0, 1)),
        x.var(dim=(0, 1), unbiased=False),
        torch.zeros(4),
        torch.ones(4),
    )
    assert rec.mean_tid["n1"] == [pytest.approx(expected[0])]
    assert rec.std_tid["n1"] == [pytest.approx(expected[1])]
    assert sorted(rec.layers) == ["n1", "n2"]


def test_recorder_records_training_steps_only():
    model = TwoNorms("batch")
    x = torch.randn(2, 6, 4)
    with lu.TIDRecorder(model) as rec:
        model(x)  # train mode, grad enabled: recorded
        with torch.no_grad():
            model(x)  # e.g. lu.evaluate(mode="train"): skipped
        model.eval()
        model(x)  # eval mode: skipped
    model.train()
    model(x)  # hooks removed on exit: skipped
    assert len(rec.mean_tid["n1"]) == len(rec.std_tid["n2"]) == 1
    assert rec.as_tensor("mean").shape == rec.as_tensor("std").shape == (2, 1)


def test_recorder_masked_bn_ignores_pads_whether_the_mask_is_positional_or_keyword():
    model = TwoNorms("masked_batch")  # n1 gets the mask positionally, n2 as a keyword
    twin = copy.deepcopy(model)
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[False, False, False, True, True], [False] * 5])
    junk = x.masked_fill(
        mask[..., None], 1e6
    )  # pads hold garbage: masked BN must not see it
    with lu.TIDRecorder(model) as clean, lu.TIDRecorder(twin) as dirty:
        model(x, mask)
        twin(junk, mask)
    for name in ("n1", "n2"):
        assert dirty.mean_tid[name] == pytest.approx(clean.mean_tid[name])
        assert dirty.std_tid[name] == pytest.approx(clean.std_tid[name])


def test_recorder_finds_plain_torch_batchnorm():
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.LazyLinear(2),
        nn.BatchNorm1d(2),
    )
    model(torch.randn(4, 1, 6, 6))  # materialize the lazy layer
    with lu.TIDRecorder(model) as rec:
        model(torch.randn(4, 1, 6, 6))
    assert sorted(rec.layers) == ["1", "5"] and all(
        len(v) == 1 for v in rec.mean_tid.values()
    )


def test_recorder_on_tiny_transformer_layers():
    model = lu.TinyTransformer(lu.TransformerConfig(norm="batch", n_layer=2))
    with lu.TIDRecorder(model) as rec:
        model(torch.randint(64, (4, 16)))
    assert list(rec.layers) == [
        "blocks.0.norm1",
        "blocks.0.norm2",
        "blocks.1.norm1",
        "blocks.1.norm2",
        "norm_f",
    ]


def test_recorder_rejects_model_without_running_stats():
    with pytest.raises(ValueError, match="running_mean/running_var"):
        lu.TIDRecorder(lu.TinyTransformer(lu.TransformerConfig(norm="layer")))


def test_recorder_as_tensor_rejects_unknown_series():
    with pytest.raises(ValueError, match="which='mean' or 'std'"):
        lu.TIDRecorder(TwoNorms("batch")).as_tensor("var")


def test_recorder_accepts_the_input_as_a_keyword():
    norm = lu.TokenBatchNorm(3)
    x = torch.randn(2, 4, 3)
    with lu.TIDRecorder(nn.ModuleDict({"bn": norm})) as rec:
        norm(x=x)
    assert len(rec.mean_tid["bn"]) == 1
