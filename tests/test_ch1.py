"""Chapter 1's library parts: token-to-token Jacobian block norms."""
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
        assert float(off_diagonal(m).abs().max()) == 0.0 and bool((m.diagonal() > 0).all())


def test_train_bn_jacobian_matches_autograd_and_leaves_running_stats_alone():
    x = randn(B, T, C, seed=2)
    bn = lu.TokenBatchNorm(C).train()
    before = bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)
    m = lu.token_jacobian_norms(bn, x)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2] and bn.training
    J = torch.autograd.functional.jacobian(lambda z: torch.nn.functional.batch_norm(z.transpose(1, 2), None, None, training=True).transpose(1, 2), x)
    ref = J.reshape(B * T, C, B * T, C).pow(2).sum(dim=(1, 3)).sqrt()
    torch.testing.assert_close(m, ref)
    assert bool((off_diagonal(m) + torch.eye(B * T) > 0).all())  # every token moves every other


def test_dependence_summary_partitions_the_mass():
    norms = torch.rand(B * T, B * T, generator=torch.Generator().manual_seed(3))
    s = lu.dependence_summary(norms, B, T)
    assert s["self"] + s["past"] + s["future"] + s["cross_example"] == pytest.approx(s["total"])
    assert s["self"] == pytest.approx(float(norms.diagonal().sum()))
    # output token (b=0, t=0) reading input (b=0, t=2) is the future; (b=1, t=0) is another example
    one = torch.zeros(B * T, B * T)
    one[0, 2] = 1.0
    one[0, T] = 10.0
    one[2, 1] = 100.0
    s = lu.dependence_summary(one, B, T)
    assert (s["future"], s["cross_example"], s["past"], s["self"]) == (1.0, 10.0, 100.0, 0.0)


def test_causal_attention_has_no_future_but_past():
    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(C, 1, batch_first=True)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    s = lu.dependence_summary(lu.token_jacobian_norms(lambda z: attn(z, z, z, attn_mask=mask)[0], randn(B, T, C)), B, T)
    assert s["future"] == 0.0 and s["cross_example"] == 0.0 and s["past"] > 0.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"expected x of shape \(B, T, C\)"):
        lu.token_jacobian_norms(lu.LayerNorm(C), randn(3, C))
    with pytest.raises(ValueError, match="expected fn to map"):
        lu.token_jacobian_norms(lambda z: z.sum(-1), randn(B, T, C))
    with pytest.raises(ValueError, match="expected block norms of shape"):
        lu.dependence_summary(torch.zeros(5, 5), B, T)


@pytest.mark.parametrize("kind", ["masked_batch", "power", "rbn", "renorm"])
def test_jacobian_names_the_supported_norms_for_an_unsupported_one(kind):
    norm = lu.make_norm(kind, C)
    with pytest.raises(ValueError, match=f"nn.BatchNorm\\* subclasses .*got {type(norm).__name__}"):
        lu.token_jacobian_norms(norm, randn(B, T, C))
    assert lu.token_jacobian_norms(norm.eval(), randn(B, T, C)).shape == (B * T, B * T)
