import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import lnbn_utils as lu

C = 8
KINDS = ["layer", "batch", "masked_batch", "rms", "none"]


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", KINDS)
def test_make_norm_shape_and_signature(kind):
    norm = lu.make_norm(kind, C)
    x = randn(3, 5, C)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    assert norm(x).shape == x.shape
    assert norm(x, padding_mask=mask).shape == x.shape


def test_layernorm_matches_pytorch():
    x = randn(4, 6, C)
    ours, ref = lu.LayerNorm(C), nn.LayerNorm(C)
    torch.testing.assert_close(ours(x), ref(x))


def test_rmsnorm_matches_pytorch():
    x = randn(4, 6, C)
    torch.testing.assert_close(lu.RMSNorm(C, eps=1e-6)(x), nn.RMSNorm(C, eps=1e-6)(x))


def test_token_batchnorm_matches_batchnorm1d_including_running_stats():
    torch.manual_seed(0)
    ours, ref = lu.TokenBatchNorm(C), nn.BatchNorm1d(C)
    for step in range(3):
        x = randn(4, 6, C, seed=step) * 3 + 1
        # nn.BatchNorm1d wants channels second: (B, T, C) -> (B, C, T)
        torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    x = randn(2, 3, C, seed=9)
    torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2))


def test_masked_batchnorm_without_mask_equals_token_batchnorm():
    masked, token = lu.MaskedBatchNorm(C), lu.TokenBatchNorm(C)
    for step in range(3):
        x = randn(4, 6, C, seed=step) * 2 - 1
        torch.testing.assert_close(masked(x), token(x))
    torch.testing.assert_close(masked.running_mean, token.running_mean)
    torch.testing.assert_close(masked.running_var, token.running_var)
    masked.eval(), token.eval()
    x = randn(2, 3, C, seed=7)
    torch.testing.assert_close(masked(x), token(x))


def test_masked_batchnorm_equals_batchnorm_on_real_tokens_only():
    x = randn(3, 7, C)
    lengths = torch.tensor([7, 2, 4])
    mask = lu.lengths_to_padding_mask(lengths, 7)
    masked, ref = lu.MaskedBatchNorm(C), nn.BatchNorm1d(C)
    y = masked(x, mask)
    real = x[~mask]  # (N, C): only the real tokens
    torch.testing.assert_close(y[~mask], ref(real))
    torch.testing.assert_close(masked.running_mean, ref.running_mean)
    torch.testing.assert_close(masked.running_var, ref.running_var)


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    extra=st.integers(0, 10),
    pad_value=st.sampled_from([0.0, -3.0, 1e4, float("inf"), float("nan")]),
)
def test_masked_batchnorm_real_outputs_invariant_to_padding(lengths, extra, pad_value):
    if sum(lengths) < 2:
        return
    seqs = [randn(n, C, seed=i) for i, n in enumerate(lengths)]
    short, short_mask = lu.pad_sequences(seqs)
    long, long_mask = lu.pad_sequences(seqs, T=max(lengths) + extra, pad_value=pad_value)
    norm = lu.MaskedBatchNorm(C)
    y_short, y_long = norm(short, short_mask), norm(long, long_mask)
    torch.testing.assert_close(y_long[:, : short.shape[1]][~short_mask], y_short[~short_mask])


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 5), T=st.integers(1, 6), seed=st.integers(0, 1000))
def test_layernorm_output_for_one_example_is_independent_of_the_batch(B, T, seed):
    norm = lu.LayerNorm(C)
    x = randn(B, T, C, seed=seed)
    others = randn(B, T, C, seed=seed + 1)
    others[0] = x[0]
    assert torch.equal(norm(x)[0], norm(others)[0])
    assert torch.equal(norm(x)[0], norm(x[:1])[0])


def test_token_batchnorm_output_depends_on_the_batch():
    norm = lu.TokenBatchNorm(C)
    x = randn(4, 5, C)
    others = randn(4, 5, C, seed=1)
    others[0] = x[0]
    assert (norm(x)[0] - norm(others)[0]).abs().max() > 1e-2


def test_masked_batchnorm_gradients_ignore_pads():
    x = randn(2, 5, C).requires_grad_()
    mask = lu.lengths_to_padding_mask([5, 2], 5)
    y = lu.MaskedBatchNorm(C)(x, mask)
    y[~mask].sum().backward()
    assert torch.all(x.grad[mask] == 0)


@pytest.mark.parametrize("kind", sorted(lu.NORM_KINDS))  # every registered kind
@pytest.mark.parametrize(
    "x, mask, error, match",
    [
        (torch.zeros(4, C), None, ValueError, r"expected x of shape \(B, T, C\), got shape \(4, 8\)"),
        (torch.zeros(2, 3, C + 1), None, ValueError, r"expected x with C=8"),
        ([[0.0] * C], None, TypeError, "expected x to be a torch.Tensor, got list"),
        (torch.zeros(2, 3, C, dtype=torch.long), None, TypeError, "floating-point x, got dtype torch.int64"),
        (torch.zeros(2, 3, C), torch.zeros(2, 3), TypeError, "dtype torch.bool .*got torch.float32"),
        (torch.zeros(2, 3, C), [[False] * 3] * 2, TypeError, "bool torch.Tensor .*got list"),
        (
            torch.zeros(2, 3, C),
            torch.zeros(3, 2, dtype=torch.bool),
            ValueError,
            r"shape \(B, T\) = \(2, 3\), got shape \(3, 2\)",
        ),
    ],
)
def test_bad_input_raises(kind, x, mask, error, match):
    with pytest.raises(error, match=match):
        lu.make_norm(kind, C)(x, padding_mask=mask)


@pytest.mark.parametrize("kind", ["batch", "masked_batch"])
def test_batch_norms_refuse_fewer_than_two_real_tokens_in_training(kind):
    norm = lu.make_norm(kind, C)
    with pytest.raises(ValueError, match="at least 2 real"):
        norm(torch.randn(1, 1, C))
    norm.eval()
    assert torch.isfinite(norm(torch.randn(1, 1, C))).all()  # eval mode uses running stats


def test_masked_batchnorm_refuses_all_padding_batch():
    mask = torch.tensor([[False, True, True], [True, True, True]])
    with pytest.raises(ValueError, match="got 1"):
        lu.MaskedBatchNorm(C)(torch.randn(2, 3, C), mask)


def test_make_norm_rejects_unknown_kind_and_bad_width():
    with pytest.raises(ValueError, match="unknown norm kind 'group'"):
        lu.make_norm("group", C)
    with pytest.raises(ValueError, match="positive int"):
        lu.make_norm("layer", 0)


def test_register_norm_adds_a_kind():
    lu.register_norm("test_identity", lu.NoNorm)
    try:
        assert isinstance(lu.make_norm("test_identity", C), lu.NoNorm)
    finally:
        del lu.NORM_KINDS["test_identity"]
