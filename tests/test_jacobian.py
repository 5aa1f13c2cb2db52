"""lnbn_utils.jacobian: token-to-token Jacobian block norms, rows and influence."""

import copy

import pytest
import torch

import lnbn_utils as lu

B, T, C = 2, 3, 4


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def off_diagonal(m):
    return m - torch.diag(m.diagonal())


def test_layernorm_and_eval_bn_are_block_diagonal():
    x = randn(B, T, C)
    bn = lu.TokenBatchNorm(C)
    bn(randn(B, T, C, seed=1) * 2 + 1)  # non-trivial running statistics
    for layer in (lu.LayerNorm(C), bn.eval(), lu.RMSNorm(C)):
        m = lu.token_jacobian_norms(layer, x)
        assert m.shape == (B * T, B * T)
        assert float(off_diagonal(m).abs().max()) == 0.0 and bool(
            (m.diagonal() > 0).all()
        )


def test_train_bn_jacobian_matches_autograd_and_leaves_running_stats_alone():
    x = randn(B, T, C, seed=2)
    bn = lu.TokenBatchNorm(C).train()
    before = (
        bn.running_mean.clone(),
        bn.running_var.clone(),
        int(bn.num_batches_tracked),
    )
    m = lu.token_jacobian_norms(bn, x)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(
        bn.running_var, before[1]
    )
    assert int(bn.num_batches_tracked) == before[2] and bn.training
    J = torch.autograd.functional.jacobian(
        lambda z: torch.nn.functional.batch_norm(
            z.transpose(1, 2), None, None, training=True
        ).transpose(1, 2),
        x,
    )
    ref = J.reshape(B * T, C, B * T, C).pow(2).sum(dim=(1, 3)).sqrt()
    torch.testing.assert_close(m, ref)
    assert bool(
        (off_diagonal(m) + torch.eye(B * T) > 0).all()
    )  # every token moves every other


def test_rows_match_the_full_grid_for_bn_and_an_lm_head():
    x = randn(B, T, C, seed=4) * 2 + 1
    bn = lu.TokenBatchNorm(C).train()
    full = lu.token_jacobian_norms(bn, x)
    rows = lu.token_jacobian_rows(copy.deepcopy(bn), x, [0, 4])
    torch.testing.assert_close(rows, full[[0, 4]])
    head = torch.nn.Linear(C, 7)  # (B, T, C) -> (B, T, 7): D need not be C
    rows = lu.token_jacobian_rows(lambda z: head(bn(z)), x, [1])
    assert rows.shape == (1, B * T) and bool((rows > 0).all())


def test_influence_summary_on_a_known_row():
    # B=2, T=3; output token 0 (sequence 0, position 0); own block 2
    row = torch.tensor([[2.0, 1.0, 0.5, 0.2, 0.2, 0.4]])
    s = lu.influence_summary(row, [0], B, T)
    assert s["per_pair"] == pytest.approx((0.1 + 0.1 + 0.2) / 3)
    assert s["partner"] == pytest.approx((0.1**2 + 0.1**2 + 0.2**2) ** 0.5)
    assert s["future_pair"] == pytest.approx((0.5 + 0.25) / 2)
    last = lu.influence_summary(
        torch.tensor([[0.2, 0.2, 2.0, 0.1, 0.1, 0.1]]), [2], B, T
    )
    assert last["future_pair"] == 0.0  # nothing after the last position


def test_bn_per_pair_influence_falls_as_one_over_n():
    # analytic: off-diagonal blocks of train-mode BN scale as 1/N
    out = []
    for n_seq in (4, 64):
        x = randn(n_seq, T, C, seed=5)
        rows = lu.token_jacobian_rows(lu.TokenBatchNorm(C).train(), x, [0])
        out.append(lu.influence_summary(rows, [0], n_seq, T)["per_pair"] * n_seq * T)
    assert out[1] == pytest.approx(out[0], rel=0.5)


def test_layernorm_has_no_cross_influence():
    x = randn(B, T, C, seed=6)
    rows = lu.token_jacobian_rows(lu.LayerNorm(C), x, [0, 5])
    s = lu.influence_summary(rows, [0, 5], B, T)
    assert s == {"per_pair": 0.0, "partner": 0.0, "future_pair": 0.0}


def test_causal_attention_has_no_future_but_past():
    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(C, 1, batch_first=True)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    x = randn(B, T, C)
    rows = lu.token_jacobian_rows(
        lambda z: attn(z, z, z, attn_mask=mask)[0], x, [0, T - 1]
    )
    s = lu.influence_summary(rows, [0, T - 1], B, T)
    assert s["future_pair"] == 0.0 and s["per_pair"] == 0.0 and float(rows[1, 0]) > 0.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"expected x of shape \(B, T, C\)"):
        lu.token_jacobian_norms(lu.LayerNorm(C), randn(3, C))
    with pytest.raises(ValueError, match="expected fn to map"):
        lu.token_jacobian_norms(lambda z: z.sum(-1), randn(B, T, C))
    with pytest.raises(ValueError, match="expected rows of shape"):
        lu.influence_summary(torch.zeros(1, 5), [0], B, T)
    with pytest.raises(ValueError, match="expected tokens in"):
        lu.token_jacobian_rows(lu.LayerNorm(C), randn(B, T, C), [B * T])
    with pytest.raises(
        ValueError, match=r"expected fn to map \(B, T, C\) to \(B, T, D\)"
    ):
        lu.token_jacobian_rows(lambda z: z.sum(-1), randn(B, T, C), [0])
