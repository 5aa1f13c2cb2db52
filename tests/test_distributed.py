"""Synchronized BatchNorm, the collective counter, and a real 2-process gloo run."""

import copy

import pytest
import torch
import torch.nn as nn

import lnbn_utils as lu

C = 6


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_sync_bn_in_one_process_is_token_batchnorm_outputs_grads_running_stats():
    ref = lu.TokenBatchNorm(C)
    with torch.no_grad():
        ref.weight.copy_(randn(C, seed=1))
        ref.bias.copy_(randn(C, seed=2))
    sync = lu.convert_sync_batchnorm(copy.deepcopy(ref))
    assert (
        isinstance(sync, lu.SyncTokenBatchNorm)
        and sync.state_dict().keys() == ref.state_dict().keys()
    )
    for step in range(3):
        x = (randn(4, 5, C, seed=10 + step) * 3 + 1).requires_grad_()
        w = randn(4, 5, C, seed=20 + step)
        y_ref, y = ref(x), sync(x)
        torch.testing.assert_close(y, y_ref)
        g_ref = torch.autograd.grad((y_ref * w).sum(), [x, ref.weight, ref.bias])
        g = torch.autograd.grad((y * w).sum(), [x, sync.weight, sync.bias])
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sync.running_mean, ref.running_mean)
    torch.testing.assert_close(sync.running_var, ref.running_var)
    assert int(sync.num_batches_tracked) == int(ref.num_batches_tracked) == 3
    x = randn(2, 3, C, seed=99)
    torch.testing.assert_close(sync.eval()(x), ref.eval()(x))


def test_sync_bn_rejects_bad_input_and_single_token():
    sync = lu.SyncTokenBatchNorm(C)
    with pytest.raises(ValueError, match="expected x of shape"):
        sync(randn(4, C))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        sync(randn(1, 1, C))


def test_counter_counts_two_collectives_per_bn_layer_per_step_and_none_for_ln():
    cfg = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=C)
    bn_model = lu.convert_sync_batchnorm(
        lu.TinyTransformer(lu.TransformerConfig(norm="batch", **cfg))
    )
    ln_model = lu.TinyTransformer(lu.TransformerConfig(norm="layer", **cfg))
    x = torch.randint(11, (3, 8), generator=torch.Generator().manual_seed(0))
    n_bn = sum(isinstance(m, lu.SyncTokenBatchNorm) for m in bn_model.modules())
    assert n_bn == 2 * 2 + 1
    with lu.CollectiveCounter() as c:
        lu.lm_loss(bn_model, (x, x)).backward()
    assert c.calls == {"bn_forward": n_bn, "bn_backward": n_bn}
    assert c.bytes == {
        "bn_forward": n_bn * (2 * C + 1) * 4,
        "bn_backward": n_bn * (2 * C + 1) * 4,
    }
    assert (
        c.total_calls("bn_") == 2 * n_bn
        and c.total_bytes() == 2 * n_bn * (2 * C + 1) * 4
    )
    with lu.CollectiveCounter() as c2, torch.no_grad():
        bn_model(x)  # no backward pass: forward collectives only
        bn_model.eval()(x)  # eval mode: running statistics, no collective
    assert c2.calls == {"bn_forward": n_bn}
    with lu.CollectiveCounter() as c3:
        lu.lm_loss(ln_model, (x, x)).backward()
    assert c3.calls == {} and c3.total_bytes() == 0


def test_all_reduce_counted_without_group_is_identity_and_counters_nest():
    t = torch.arange(4.0)
    with lu.CollectiveCounter() as outer:
        with lu.CollectiveCounter() as inner:
            out = lu.all_reduce_counted(t, "grad")
        lu.all_reduce_counted(t, "grad")
    lu.all_reduce_counted(t, "grad")  # no active counter: nothing recorded
    assert out is t and torch.equal(t, torch.arange(4.0))
    assert (
        inner.calls == {"grad": 1}
        and outer.calls == {"grad": 2}
        and outer.bytes == {"grad": 32}
    )
    with pytest.raises(ValueError, match="expected a torch.Tensor"):
        lu.all_reduce_counted([1.0, 2.0])


def test_convert_sync_batchnorm_keeps_model_function():
    torch.manual_seed(0)
    model = lu.TinyTransformer(
        lu.TransformerConfig(
            vocab_size=11, block_size=8, n_embd=C, n_head=2, norm="batch"
        )
    )
    x = torch.randint(11, (4, 8), generator=torch.Generator().manual_seed(1))
    ref = model(x)
    lu.convert_sync_batchnorm(model)
    assert not any(type(m) is lu.TokenBatchNorm for m in model.modules())
    torch.testing.assert_close(model(x), ref)
    assert isinstance(lu.convert_sync_batchnorm(nn.Linear(2, 2)), nn.Linear)


def test_free_port_is_an_int_port():
    port = lu.free_port()
    assert isinstance(port, int) and 0 < port < 65536


def test_sync_stats_stay_exact_at_a_large_mean_where_one_pass_fails():
    x = 1e3 + randn(4, 8, C, seed=7)  # mean 1e3, unit spread: E[x^2] - mean^2 cancels
    mean, var, n = lu.sync_batch_stats(x)
    ref = x.double().reshape(-1, C).var(0, unbiased=False)
    one_pass = x.pow(2).mean((0, 1)) - x.mean((0, 1)).pow(
        2
    )  # the float32 one-pass form
    assert float(n) == 32
    torch.testing.assert_close(
        mean.double(), x.double().mean((0, 1)), rtol=0, atol=1e-4
    )
    assert float((var.double() - ref).abs().max()) < 1e-5
    assert float((one_pass.double() - ref).abs().max()) > 1e-3  # why the two-pass form


def test_sync_stats_gradient_matches_plain_batch_statistics():
    x = randn(3, 5, C, seed=8).requires_grad_()
    w = randn(C, seed=9)
    mean, var, _ = lu.sync_batch_stats(x)
    g = torch.autograd.grad((mean * w + var * w).sum(), x)[0]
    x2 = x.detach().clone().requires_grad_()
    flat = x2.reshape(-1, C)
    ref = (flat.mean(0) * w + flat.var(0, unbiased=False) * w).sum()
    torch.testing.assert_close(g, torch.autograd.grad(ref, x2)[0])


@pytest.mark.parametrize("momentum", [0.1, None])
def test_sync_bn_float32_results_are_bit_identical_to_its_old_update(momentum):
    """The running-statistics update, now lu.norms.update_running_stats, is unchanged:
    the old private update written out gives the same buffers bit for bit."""
    sync = lu.SyncTokenBatchNorm(C, momentum=momentum)
    run_mean, run_var = sync.running_mean.clone(), sync.running_var.clone()
    for step in range(3):
        x = randn(4, 5, C, seed=30 + step) * (step + 1) + step
        x_ref = x.clone().requires_grad_()
        y = sync(x)
        mean, var, n = lu.sync_batch_stats(x_ref)
        m = 1.0 / (step + 1) if momentum is None else momentum  # the old formula
        run_mean.lerp_(mean.detach(), m)
        run_var.lerp_(var.detach() * n / (n - 1), m)
        y_ref = (x_ref - mean) * torch.rsqrt(var + sync.eps) * sync.weight + sync.bias
        assert torch.equal(y, y_ref), step
        assert torch.equal(sync.running_mean, run_mean), step
        assert torch.equal(sync.running_var, run_var), step


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sync_bn_follows_the_dtype_policy(dtype):
    sync, ref = lu.SyncTokenBatchNorm(C), lu.TokenBatchNorm(C)
    x = randn(4, 5, C, seed=3) * 2 + 1
    for training in (True, False):
        sync.train(training), ref.train(training)
        y = sync(x.to(dtype))
        assert y.dtype == dtype and torch.isfinite(y).all()
        u = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11  # unit roundoff
        torch.testing.assert_close(
            y.float(), ref(x.to(dtype).float()), rtol=2 * u, atol=2 * u
        )
        assert all(b.dtype != dtype for b in sync.buffers())
    with pytest.raises(TypeError, match="expected x of dtype torch.float32 .*float64"):
        sync(x.double())
    with pytest.raises(TypeError, match="floating-point x, got dtype torch.int64"):
        sync(x.long())
