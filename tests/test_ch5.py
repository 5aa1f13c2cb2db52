"""Chapter 5's norms: DyT, PowerNorm, Regularized BN, Batch Renormalization, and the extra training loss."""
import copy

import pytest
import torch

import lnbn_utils as lu

C = 8
NEW_KINDS = ["dyt", "power", "rbn", "renorm"]
BATCH_STAT_KINDS = ["power", "rbn", "renorm"]  # use statistics over the batch's real tokens


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_new_kinds_have_the_norm_signature_in_both_modes(kind):
    norm = lu.make_norm(kind, C)
    x, mask = randn(3, 5, C), lu.lengths_to_padding_mask(torch.tensor([5, 2, 4]), 5)
    for training in (True, False):
        norm.train(training)
        assert norm(x).shape == x.shape
        assert torch.isfinite(norm(x, padding_mask=mask)).all()


@pytest.mark.parametrize("kind", BATCH_STAT_KINDS)
def test_batch_stat_kinds_refuse_fewer_than_two_real_tokens_in_training(kind):
    with pytest.raises(ValueError, match="at least 2 real"):
        lu.make_norm(kind, C)(torch.randn(1, 1, C))


@pytest.mark.parametrize(
    "factory, kwargs, match",
    [
        (lu.DyT, {"alpha0": 0.0}, "alpha0 > 0"),
        (lu.PowerNorm, {"alpha_fwd": 1.0}, "alpha_fwd < 1"),
        (lu.RegularizedBatchNorm, {"penalty_mean": -1.0}, "penalty_mean >= 0"),
        (lu.BatchRenorm, {"r_max": 0.5}, "r_max >= 1"),
    ],
)
def test_bad_hyperparameters_raise_value_error(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(C, **kwargs)


@pytest.mark.parametrize("kind", NEW_KINDS)
@pytest.mark.parametrize("position", ["pre", "post"])
def test_new_kinds_work_in_the_tiny_transformer(kind, position):
    cfg = lu.TransformerConfig(vocab_size=10, block_size=8, n_layer=2, n_embd=16, norm=kind,
                               norm_position=position, causal=False, n_classes=3)
    torch.manual_seed(0)
    model = lu.TinyTransformer(cfg)
    idx = torch.randint(10, (4, 8), generator=torch.Generator().manual_seed(1))
    mask = lu.lengths_to_padding_mask(torch.tensor([8, 3, 5, 2]), 8)
    loss = model(idx, mask).logsumexp(-1).mean() + lu.stat_penalty(model)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    assert torch.isfinite(model(idx, mask)).all() and torch.isfinite(model(idx)).all()


@pytest.mark.parametrize("kind", BATCH_STAT_KINDS)
@pytest.mark.parametrize("pad_value", [0.0, -3.0, 1e4])
def test_real_outputs_ignore_pads_and_their_amount(kind, pad_value):
    seqs = [randn(n, C, seed=i) * 2 + 1 for i, n in enumerate([5, 2, 4])]
    short, short_mask = lu.pad_sequences(seqs)
    long, long_mask = lu.pad_sequences(seqs, T=9, pad_value=pad_value)
    a, b = lu.make_norm(kind, C), lu.make_norm(kind, C)
    for _ in range(3):  # a few training steps, then eval: running statistics must agree too
        y_short, y_long = a(short, short_mask), b(long, long_mask)
        torch.testing.assert_close(y_long[:, :5][~short_mask], y_short[~short_mask])
    a.eval(), b.eval()
    torch.testing.assert_close(b(long, long_mask)[:, :5][~short_mask], a(short, short_mask)[~short_mask])


# --- DyT --------------------------------------------------------------------------------------


def test_dyt_is_weight_tanh_alpha_x_plus_bias_and_the_same_in_both_modes():
    norm = lu.DyT(C)
    assert norm.alpha.shape == () and norm.alpha.item() == 0.5  # one learnable scalar (Zhu et al.)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(C) / C)
        norm.bias.fill_(0.3)
    x = randn(2, 4, C) * 3
    torch.testing.assert_close(norm(x), torch.tanh(0.5 * x) * norm.weight + 0.3)
    assert torch.equal(norm.train()(x), norm.eval()(x))
    assert torch.equal(norm(x)[0], norm(x[:1])[0])  # no statistics: one example does not see the others


# --- PowerNorm ----------------------------------------------------------------------------------


def test_powernorm_normalizes_with_the_running_quadratic_mean_of_previous_steps():
    norm = lu.PowerNorm(C, eps=0.0)
    x1, x2 = randn(4, 6, C) * 3 + 1, randn(4, 6, C, seed=1) * 2
    torch.testing.assert_close(norm(x1), x1)  # step 1: psi = 1 (initial), not x1's own statistics
    phi1 = x1.pow(2).mean(dim=(0, 1))  # quadratic mean, no centring
    torch.testing.assert_close(norm.running_phi, 0.9 + 0.1 * phi1)
    torch.testing.assert_close(norm(x2), x2 / (0.9 + 0.1 * phi1).sqrt())
    psi = norm.running_phi.clone()
    norm.eval()
    torch.testing.assert_close(norm(x1), x1 / psi.sqrt())


def test_powernorm_batch_stats_and_tid_view():
    x = randn(3, 5, C) + 2
    zeros, phi, n = lu.PowerNorm.batch_stats(x, None)
    assert n == 15 and torch.equal(zeros, torch.zeros(C))
    torch.testing.assert_close(phi, x.pow(2).mean(dim=(0, 1)))
    model = lu.TinyTransformer(lu.TransformerConfig(vocab_size=10, block_size=8, n_embd=16, norm="power"))
    with lu.TIDRecorder(model) as rec:
        model(torch.randint(10, (2, 8)))
    assert len(rec.layers) == 5  # four block norms and the final one
    assert all(v == [0.0] for v in rec.mean_tid.values())  # no centring: the mean-TID is 0
    assert all(v[0] > 0 for v in rec.std_tid.values())


def test_powernorm_backward_is_the_approximate_gradient():
    x = (randn(2, 5, C) * 2).requires_grad_()
    g = randn(2, 5, C, seed=3)
    # alpha_bkw = 1: nu stays 0, so the gradient is exactly that of x / psi
    plain = lu.PowerNorm(C, alpha_bkw=1.0)
    plain(x).backward(g)
    torch.testing.assert_close(x.grad, g / (1 + plain.eps) ** 0.5)
    assert torch.equal(plain.nu, torch.zeros(C))
    # alpha_bkw < 1: the backward subtracts nu * z, then updates nu with mean(g * z)
    norm, psi = lu.PowerNorm(C, alpha_bkw=0.9), (1 + 1e-5) ** 0.5
    x.grad = None
    norm(x).backward(g)  # nu was 0
    z = x.detach() / psi
    nu = 0.1 * (g * z).mean(dim=(0, 1))
    torch.testing.assert_close(norm.nu, nu)
    x2 = randn(2, 5, C, seed=4).requires_grad_()
    psi2 = (norm.running_phi + norm.eps).sqrt()
    norm(x2).backward(g)
    torch.testing.assert_close(x2.grad, (g - nu * x2.detach() / psi2) / psi2)


# --- Regularized BN -----------------------------------------------------------------------------


def test_regularized_bn_forward_is_masked_bn_and_penalty_is_the_diff_penalty():
    rbn, mbn = lu.RegularizedBatchNorm(C, penalty_mean=0.5, penalty_var=0.2), lu.MaskedBatchNorm(C)
    mask = lu.lengths_to_padding_mask(torch.tensor([6, 3]), 6)
    for step in range(3):
        x = randn(2, 6, C, seed=step) * 2 + 1
        run_mean, run_var = rbn.running_mean.clone(), rbn.running_var.clone()
        # real tokens: masked BN's pad outputs are its bias (pads take no part)
        torch.testing.assert_close(rbn(x, mask)[~mask], mbn(x, mask)[~mask])
        mean, var, _ = lu.MaskedBatchNorm.batch_stats(x, mask)
        want = 0.5 * (mean - run_mean).pow(2).sum() + 0.2 * (var - run_var).abs().sum()
        torch.testing.assert_close(rbn.penalty, want)
    torch.testing.assert_close(rbn.running_var, mbn.running_var)
    rbn.eval()
    rbn(x, mask)
    assert float(rbn.penalty) == 0.0


def test_stat_penalty_sums_the_penalties_and_has_a_gradient():
    model = lu.TinyTransformer(lu.TransformerConfig(vocab_size=10, block_size=8, n_embd=16, norm="rbn"))
    model(torch.randint(10, (2, 8)))
    rbns = [m for m in model.modules() if isinstance(m, lu.RegularizedBatchNorm)]
    total = lu.stat_penalty(model)
    torch.testing.assert_close(total, sum(m.penalty for m in rbns))
    assert total > 0 and total.requires_grad
    plain = lu.TinyTransformer(lu.TransformerConfig(vocab_size=10, block_size=8, n_embd=16, norm="layer"))
    assert float(lu.stat_penalty(plain)) == 0.0


# --- Batch Renormalization ----------------------------------------------------------------------


def test_batch_renorm_forward_uses_the_running_statistics_when_unclipped():
    norm = lu.BatchRenorm(C, r_max=100.0, d_max=100.0, warmup_steps=0)
    for step in range(3):
        x = randn(4, 6, C, seed=step) * (1 + step) + step
        before = copy.deepcopy(norm).eval()
        torch.testing.assert_close(norm(x), before(x))  # train mode = eval mode with the current running stats


def test_batch_renorm_starts_as_batchnorm_and_relaxes_its_limits():
    norm, ref = lu.BatchRenorm(C, warmup_steps=10), lu.MaskedBatchNorm(C)
    assert norm.limits() == (1.0, 0.0)
    x = randn(4, 6, C) * 3 + 2
    torch.testing.assert_close(norm(x), ref(x))  # r = 1, d = 0 at step 0: plain BN
    torch.testing.assert_close(norm.running_var, ref.running_var)
    for step in range(4):
        norm(randn(4, 6, C, seed=step))
    assert norm.limits() == pytest.approx((1.0 + 0.5 * 2.0, 0.5 * 5.0))  # half way after 5 of 10 steps
    for step in range(10):
        norm(randn(4, 6, C, seed=step))
    assert norm.limits() == (3.0, 5.0)


def test_batch_renorm_gradient_still_sees_the_batch_statistics():
    norm = lu.BatchRenorm(C, r_max=100.0, d_max=100.0, warmup_steps=0)
    norm(randn(4, 6, C) + 1)  # some running statistics
    x = (randn(4, 6, C, seed=1) * 2).requires_grad_()
    g = randn(4, 6, C, seed=2)
    frozen = copy.deepcopy(norm).eval()
    x_eval = x.detach().clone().requires_grad_()
    frozen(x_eval).backward(g)
    norm(x).backward(g)
    # same forward value, but BN's gradient removes the per-channel mean of the incoming gradient
    assert (x.grad - x_eval.grad).abs().max() > 1e-3
    torch.testing.assert_close(x.grad.sum(dim=(0, 1)), torch.zeros(C), atol=1e-5, rtol=0)


# --- the extra training loss --------------------------------------------------------------------


def _setup(kind, seed=0):
    g = lu.seed_everything(seed)
    corpus = lu.CharCorpus()
    model = lu.TinyTransformer(lu.TransformerConfig(vocab_size=corpus.vocab_size, block_size=8, n_layer=1, n_embd=16, norm=kind))
    return model, (lambda: corpus.batch("train", 2, 8, g))


def test_train_extra_loss_is_added_but_not_recorded():
    calls = []

    def constant(model):
        calls.append(1)
        return torch.tensor(100.0)  # no gradient: training must be unchanged

    plain = lu.train(*_setup("layer"), steps=5)
    with_extra = lu.train(*_setup("layer"), steps=5, extra_loss=constant)
    assert len(calls) == 5 and with_extra.train_loss == plain.train_loss
    # a penalty with a gradient changes training
    a = lu.train(*_setup("rbn"), steps=5)
    b = lu.train(*_setup("rbn"), steps=5, extra_loss=lu.stat_penalty)
    assert a.train_loss[0] == b.train_loss[0] and a.train_loss[-1] != b.train_loss[-1]


def test_train_char_lm_passes_extra_loss_through():
    corpus = lu.CharCorpus()
    kw = dict(steps=3, seed=0, n_layer=1, n_embd=16, n_val_batches=2)
    a = lu.train_char_lm(corpus, "rbn", 2, 8, **kw)
    b = lu.train_char_lm(corpus, "rbn", 2, 8, extra_loss=lu.stat_penalty, **kw)
    assert a.history.train_loss[0] == b.history.train_loss[0]
    assert a.history.train_loss[-1] != b.history.train_loss[-1]
