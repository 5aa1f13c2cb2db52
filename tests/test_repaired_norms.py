"""repaired_norms: PowerNorm, Regularized BN, Batch Renorm, DyT, stat_penalty."""

import copy

import pytest
import torch

import lnbn_utils as lu

C = 8
KINDS = ["dyt", "power", "power_simple", "rbn", "renorm"]
BATCH_STAT_KINDS = ["power", "power_simple", "rbn", "renorm"]


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", KINDS)
def test_kinds_have_the_norm_signature_in_both_modes(kind):
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
        (lu.PowerNorm, {"alpha_fwd": 1.0}, "alpha_fwd >= 0 and < 1"),
        (lu.PowerNorm, {"groups": 3}, "groups dividing num_features=8"),
        (lu.PowerNorm, {"warmup_steps": -1}, "warmup_steps >= 0"),
        (lu.RegularizedBatchNorm, {"penalty_mean": -1.0}, "penalty_mean >= 0"),
        (lu.BatchRenorm, {"r_max": 0.5}, "r_max >= 1"),
    ],
)
def test_bad_hyperparameters_raise_value_error(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(C, **kwargs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("position", ["pre", "post"])
def test_kinds_work_in_the_tiny_transformer(kind, position):
    cfg = lu.TransformerConfig(
        vocab_size=10, block_size=8, n_layer=2, n_embd=16, norm=kind,
        norm_position=position, causal=False, n_classes=3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = lu.TinyTransformer(cfg)
    idx = torch.randint(10, (4, 8), generator=torch.Generator().manual_seed(1))
    mask = lu.lengths_to_padding_mask(torch.tensor([8, 3, 5, 2]), 8)
    loss = model(idx, mask).logsumexp(-1).mean() + lu.stat_penalty(model)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    model.eval()
    assert torch.isfinite(model(idx, mask)).all() and torch.isfinite(model(idx)).all()


@pytest.mark.parametrize("kind", BATCH_STAT_KINDS)
@pytest.mark.parametrize("pad_value", [0.0, -3.0, 1e4])
def test_real_outputs_and_gradients_ignore_pads_and_their_amount(kind, pad_value):
    seqs = [randn(n, C, seed=i) * 2 + 1 for i, n in enumerate([5, 2, 4])]
    short, short_mask = lu.pad_sequences(seqs)
    long, long_mask = lu.pad_sequences(seqs, T=9, pad_value=pad_value)
    short.requires_grad_(), long.requires_grad_()
    a, b = lu.make_norm(kind, C), lu.make_norm(kind, C)
    real = ~short_mask
    for step in range(3):  # training steps, then eval: running statistics agree too
        g = randn(3, 9, C, seed=10 + step).masked_fill(long_mask[..., None], 0.0)
        y_short, y_long = a(short, short_mask), b(long, long_mask)
        torch.testing.assert_close(y_long[:, :5][real], y_short[real])
        (y_short * g[:, :5]).sum().backward()
        (y_long * g).sum().backward()
        torch.testing.assert_close(long.grad[:, :5][real], short.grad[real])
    a.eval(), b.eval()
    y_short, y_long = a(short, short_mask), b(long, long_mask)
    torch.testing.assert_close(y_long[:, :5][real], y_short[real])


# --- DyT ---------------------------------------------------------------------------


def test_dyt_is_weight_tanh_alpha_x_plus_bias_and_the_same_in_both_modes():
    norm = lu.DyT(C)
    assert norm.alpha.shape == () and norm.alpha.item() == 0.5  # one scalar
    assert lu.DyT(C, alpha0=2.0).alpha.item() == 2.0
    with torch.no_grad():
        norm.weight.copy_(torch.arange(C) / C)
        norm.bias.fill_(0.3)
    x = randn(2, 4, C) * 3
    torch.testing.assert_close(norm(x), torch.tanh(0.5 * x) * norm.weight + 0.3)
    assert torch.equal(norm.train()(x), norm.eval()(x))
    assert torch.equal(norm(x)[0], norm(x[:1])[0])  # no statistics across examples


# --- PowerNorm: the published semantics --------------------------------------------


def published_powernorm_step(x, g_out, state, w, b, groups, warmup, afwd, abkw, eps):
    """One training step of the authors' MaskPowerNorm, written out from their code.

    GroupScaling per token and channel group; ``iters`` counts steps from 1; the
    forward divides by the batch's quadratic mean while iters <= warmup, else by the
    running one; running_phi is a cumulative average while iters < warmup, and an
    exponential average always; the backward divides by the batch's quadratic mean
    and accumulates ema_gz += mean((g - (1 - abkw) ema_gz z) z). Returns y, dL/dx.
    """
    x = x.clone().requires_grad_()
    B, T, _ = x.shape
    xg = x.reshape(B, T, groups, C // groups)
    z0 = (xg / torch.sqrt((xg * xg).mean(-1, keepdim=True) + eps)).reshape(B, T, C)
    state["iters"] += 1
    it = state["iters"]
    var = z0.detach().pow(2).reshape(-1, C).mean(0)
    z = z0.detach() / torch.sqrt((var if it <= warmup else state["phi"]) + eps)
    if it < warmup:
        state["phi"] = state["phi"] * (it - 1) / it + var / it
    state["phi"] = afwd * state["phi"] + (1 - afwd) * var
    y = w * z + b
    g = g_out * w
    approx = g - (1 - abkw) * state["ema_gz"] * z
    state["ema_gz"] = state["ema_gz"] + (approx * z).reshape(-1, C).mean(0)
    z0.backward(approx / torch.sqrt(var + eps))
    return y, x.grad


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_powernorm_follows_the_published_algorithm_through_and_after_warmup(groups):
    afwd, abkw, eps, warmup = 0.9, 0.8, 1e-5, 3
    norm = lu.PowerNorm(
        C, eps=eps, alpha_fwd=afwd, alpha_bkw=abkw, warmup_steps=warmup, groups=groups
    )
    with torch.no_grad():
        norm.weight.copy_(1 + torch.arange(C) / C)
        norm.bias.fill_(0.1)
    w, b = norm.weight.detach().clone(), norm.bias.detach().clone()
    state = {"iters": 0, "phi": torch.ones(C), "ema_gz": torch.zeros(C)}
    for step in range(6):  # 3 warm-up steps, then 3 with running statistics
        x = randn(4, 6, C, seed=step) * (1 + step) + randn(C, seed=99)
        g_out = randn(4, 6, C, seed=50 + step)
        y_ref, dx_ref = published_powernorm_step(
            x, g_out, state, w, b, groups, warmup, afwd, abkw, eps
        )
        x = x.requires_grad_()
        y = norm(x)
        y.backward(g_out)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(x.grad, dx_ref)
        torch.testing.assert_close(norm.running_phi, state["phi"])
        torch.testing.assert_close(norm.nu, (1 - abkw) * state["ema_gz"])
    norm.eval()
    x = randn(2, 3, C, seed=7)
    xg = x.reshape(2, 3, groups, -1)
    z0 = (xg / (xg.pow(2).mean(-1, keepdim=True) + eps).sqrt()).reshape(2, 3, C)
    torch.testing.assert_close(norm(x), w * z0 / (state["phi"] + eps).sqrt() + b)


def test_group_scale_gives_every_token_and_group_unit_rms():
    x = randn(2, 3, C) * 5 + 2
    y = lu.group_scale(x, groups=2, eps=0.0)
    rms = y.reshape(2, 3, 2, C // 2).pow(2).mean(-1)
    torch.testing.assert_close(rms, torch.ones(2, 3, 2))
    torch.testing.assert_close(y[0], lu.group_scale(x[:1], groups=2, eps=0.0)[0])


# --- PowerNorm: the simplified variant ---------------------------------------------


def test_simplified_powernorm_normalizes_with_the_running_mean_of_previous_steps():
    norm = lu.PowerNorm(C, eps=0.0, simplified=True)
    x1, x2 = randn(4, 6, C) * 3 + 1, randn(4, 6, C, seed=1) * 2
    torch.testing.assert_close(norm(x1), x1)  # step 1: psi = 1, not x1's statistics
    phi1 = x1.pow(2).mean(dim=(0, 1))  # quadratic mean, no centring
    torch.testing.assert_close(norm.running_phi, 0.9 + 0.1 * phi1)
    torch.testing.assert_close(norm(x2), x2 / (0.9 + 0.1 * phi1).sqrt())
    psi = norm.running_phi.clone()
    norm.eval()
    torch.testing.assert_close(norm(x1), x1 / psi.sqrt())


def test_simplified_powernorm_backward_is_the_approximate_gradient():
    x = (randn(2, 5, C) * 2).requires_grad_()
    g = randn(2, 5, C, seed=3)
    plain = lu.PowerNorm(C, alpha_bkw=1.0, simplified=True)  # nu stays 0
    plain(x).backward(g)
    torch.testing.assert_close(x.grad, g / (1 + plain.eps) ** 0.5)
    assert torch.equal(plain.nu, torch.zeros(C))
    norm, psi = lu.PowerNorm(C, alpha_bkw=0.9, simplified=True), (1 + 1e-5) ** 0.5
    x.grad = None
    norm(x).backward(g)  # nu was 0; now a running average of mean(g * z)
    nu = 0.1 * (g * x.detach() / psi).mean(dim=(0, 1))
    torch.testing.assert_close(norm.nu, nu)
    x2 = randn(2, 5, C, seed=4).requires_grad_()
    psi2 = (norm.running_phi + norm.eps).sqrt()
    norm(x2).backward(g)
    torch.testing.assert_close(x2.grad, (g - nu * x2.detach() / psi2) / psi2)


def test_powernorm_quadratic_mean_is_over_the_group_scaled_real_tokens():
    x, mask = randn(3, 5, C) + 2, lu.lengths_to_padding_mask(torch.tensor([5, 2, 4]), 5)
    phi, n = lu.PowerNorm(C, groups=2).quadratic_mean(x, mask)
    z0 = lu.group_scale(x, 2)[~mask]  # (N, C)
    assert n == 11
    torch.testing.assert_close(phi, z0.pow(2).mean(0))


# --- Regularized BN ----------------------------------------------------------------


def test_regularized_bn_uses_the_papers_statistics_convention():
    rbn = lu.RegularizedBatchNorm(C, penalty_mean=0.5, penalty_var=0.2, eps=0.0)
    mask = lu.lengths_to_padding_mask(torch.tensor([6, 3]), 6)
    for step in range(3):
        x = randn(2, 6, C, seed=step) * 2 + 1
        run_mean, run_var = rbn.running_mean.clone(), rbn.running_var.clone()
        y = rbn(x, mask)
        mean, var, _ = lu.MaskedBatchNorm.batch_stats(x, mask)  # biased variance
        real = ~mask  # plain BN forward at real tokens (pads are read as 0)
        torch.testing.assert_close(y[real], ((x - mean) / var.sqrt())[real])
        new_mean, new_var = run_mean.lerp(mean, 0.1), run_var.lerp(var, 0.1)  # biased
        torch.testing.assert_close(rbn.running_var, new_var)
        want = 0.5 * (mean - new_mean).pow(2).sum() + 0.2 * (var - new_var).abs().sum()
        torch.testing.assert_close(rbn.penalty, want)  # after this step's update
    rbn.eval()
    torch.testing.assert_close(rbn(x, mask), (x - new_mean) / new_var.sqrt())
    assert float(rbn.penalty) == 0.0


def test_regularized_bn_penalty_vanishes_on_a_repeated_batch():
    # with an unbiased running variance it would stay at N / (N - 1) - 1 of var_B
    rbn, x = lu.RegularizedBatchNorm(C), randn(1, 8, C) * 3 + 1
    for _ in range(300):
        rbn(x)
    assert float(rbn.penalty) < 1e-6


def test_stat_penalty_sums_the_penalties_and_has_a_gradient():
    cfg = lu.TransformerConfig(vocab_size=10, block_size=8, n_embd=16, norm="rbn")
    model = lu.TinyTransformer(cfg)
    model(torch.randint(10, (2, 8)))
    rbns = [m for m in model.modules() if isinstance(m, lu.RegularizedBatchNorm)]
    total = lu.stat_penalty(model)
    torch.testing.assert_close(total, sum(m.penalty for m in rbns))
    assert total > 0 and total.requires_grad
    plain = lu.TinyTransformer(
        lu.TransformerConfig(vocab_size=10, block_size=8, n_embd=16, norm="layer")
    )
    assert float(lu.stat_penalty(plain)) == 0.0


# --- Batch Renormalization ---------------------------------------------------------


def test_batch_renorm_forward_uses_the_running_statistics_when_unclipped():
    norm = lu.BatchRenorm(C, r_max=100.0, d_max=100.0, warmup_steps=0)
    for step in range(3):
        x = randn(4, 6, C, seed=step) * (1 + step) + step
        before = copy.deepcopy(norm).eval()
        torch.testing.assert_close(norm(x), before(x))  # train = eval, current stats


def test_batch_renorm_starts_as_batchnorm_and_relaxes_its_limits():
    norm, ref = lu.BatchRenorm(C, warmup_steps=10), lu.MaskedBatchNorm(C)
    assert norm.limits() == (1.0, 0.0)
    x = randn(4, 6, C) * 3 + 2
    torch.testing.assert_close(norm(x), ref(x))  # r = 1, d = 0 at step 0: plain BN
    torch.testing.assert_close(norm.running_var, ref.running_var)
    for step in range(4):
        norm(randn(4, 6, C, seed=step))
    assert norm.limits() == pytest.approx((2.0, 2.5))  # half way after 5 of 10 steps
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
    # same forward value, but BN's gradient removes the per-channel mean of g
    assert (x.grad - x_eval.grad).abs().max() > 1e-3
    torch.testing.assert_close(
        x.grad.sum(dim=(0, 1)), torch.zeros(C), atol=1e-5, rtol=0
    )


# --- the extra training loss -------------------------------------------------------


def _setup(kind, seed=0):
    g = lu.seed_everything(seed)
    corpus = lu.CharCorpus()
    cfg = lu.TransformerConfig(
        vocab_size=corpus.vocab_size, block_size=8, n_layer=1, n_embd=16, norm=kind
    )
    return lu.TinyTransformer(cfg), (lambda: corpus.batch("train", 2, 8, g))


def test_train_extra_loss_is_added_but_not_recorded():
    calls = []

    def constant(model):
        calls.append(1)
        return torch.tensor(100.0)  # no gradient: training must be unchanged

    plain = lu.train(*_setup("layer"), steps=5)
    with_extra = lu.train(*_setup("layer"), steps=5, extra_loss=constant)
    assert len(calls) == 5 and with_extra.train_loss == plain.train_loss
    a = lu.train(*_setup("rbn"), steps=5)  # a penalty with a gradient changes training
    b = lu.train(*_setup("rbn"), steps=5, extra_loss=lu.stat_penalty)
    assert a.train_loss[0] == b.train_loss[0] and a.train_loss[-1] != b.train_loss[-1]


# --- float32 numerics pinned to the code before the dtype policy ---------------------
# The dtype-policy change (float16/bfloat16 input computed in float32) and the move to
# the shared helpers (update_running_stats, real_token_weights) must leave float32
# results bit-identical: outputs, input gradients and buffers equal the old code's
# (written out below, as it stood before the change) with torch.equal, not a tolerance.


def legacy_forward(norm, x, mask):
    """The pre-change float32 forward of DyT, PowerNorm, Regularized BN, BatchRenorm."""
    if isinstance(norm, lu.DyT):
        return torch.tanh(norm.alpha * x) * norm.weight + norm.bias
    if not norm.training:
        if isinstance(norm, lu.PowerNorm):
            psi = (norm.running_phi + norm.eps).sqrt()
            return norm._scale_in(x) / psi * norm.weight + norm.bias
        if isinstance(norm, lu.RegularizedBatchNorm):
            norm.penalty = torch.zeros(())
        return lu.MaskedBatchNorm.forward(norm, x, mask)
    if isinstance(norm, lu.PowerNorm):
        if mask is None:
            real, n = torch.ones_like(x[..., :1]), x.shape[0] * x.shape[1]
        else:
            real, n = (~mask).unsqueeze(-1).to(x.dtype), int((~mask).sum())
        psi = (norm.running_phi + norm.eps).sqrt()
        z0 = norm._scale_in(x)
        phi = (z0.detach().masked_fill(real == 0, 0.0).pow(2)).sum(dim=(0, 1)) / n
        with torch.no_grad():
            norm.num_batches_tracked += 1
        step = int(norm.num_batches_tracked)
        if norm.simplified:
            fwd = bwd = psi
        else:
            bwd = (phi + norm.eps).sqrt()
            fwd = bwd if step <= norm.warmup_steps else psi
        z = lu.repaired_norms._PowerFunction.apply(
            z0, fwd, bwd, norm.nu, real, norm.alpha_bkw, norm.simplified
        )
        with torch.no_grad():
            if not norm.simplified and step < norm.warmup_steps:
                norm.running_phi.mul_((step - 1) / step).add_(phi / step)
            norm.running_phi.lerp_(phi, 1.0 - norm.alpha_fwd)
        return z * norm.weight + norm.bias
    mean, var, n = norm.batch_stats(x, mask)
    if isinstance(norm, lu.RegularizedBatchNorm):
        with torch.no_grad():
            norm.running_mean.lerp_(mean.detach(), norm.momentum)
            norm.running_var.lerp_(var.detach(), norm.momentum)
            norm.num_batches_tracked += 1
        norm.penalty = (
            norm.penalty_mean * (mean - norm.running_mean).pow(2).sum()
            + norm.penalty_var * (var - norm.running_var).abs().sum()
        )
        return (x - mean) * torch.rsqrt(var + norm.eps) * norm.weight + norm.bias
    sigma_b = (var + norm.eps).sqrt()
    sigma_run = (norm.running_var + norm.eps).sqrt()
    r_max, d_max = norm.limits()
    r = (sigma_b / sigma_run).detach().clamp(1.0 / r_max, r_max)
    d = ((mean - norm.running_mean) / sigma_run).detach().clamp(-d_max, d_max)
    with torch.no_grad():
        norm.running_mean.lerp_(mean.detach(), norm.momentum)
        norm.running_var.lerp_(var.detach() * n / (n - 1), norm.momentum)
        norm.num_batches_tracked += 1
    return ((x - mean) / sigma_b * r + d) * norm.weight + norm.bias


ZERO_PAD_KINDS = ("rbn", "renorm", "power", "power_simple")  # pads read as 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("use_mask", [False, True])
def test_float32_results_are_bit_identical_to_the_code_before_the_dtype_policy(
    kind, use_mask
):
    mask = (
        lu.lengths_to_padding_mask(torch.tensor([6, 5, 3, 6]), 6) if use_mask else None
    )
    kwargs = {"warmup_steps": 2} if kind == "power" else {}  # warm-up, then running
    norm = lu.make_norm(kind, C, **kwargs)
    with torch.no_grad():
        for i, p in enumerate(norm.parameters()):
            g = torch.Generator().manual_seed(40 + i)
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    old = copy.deepcopy(norm)
    for step in range(5):  # 4 training steps, then eval
        training = step < 4
        norm.train(training), old.train(training)
        x = randn(4, 6, C, seed=step) * (1 + step) + step
        zero_pads = mask is not None and kind in ZERO_PAD_KINDS
        if zero_pads:
            x = x.masked_fill(mask.unsqueeze(-1), 0.0)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        g = randn(4, 6, C, seed=20 + step)
        ya, yb = norm(xa, mask), legacy_forward(old, xb, mask)
        (ya * g).sum().backward()
        (yb * g).sum().backward()
        assert torch.equal(ya, yb), (kind, step)
        if zero_pads and training:  # pads pass no gradient back
            xb.grad.masked_fill_(mask.unsqueeze(-1), 0.0)
        assert torch.equal(xa.grad, xb.grad), (kind, step)
        for (name, a), b in zip(norm.named_buffers(), old.buffers()):
            assert torch.equal(a, b), (kind, step, name)
        for (name, a), b in zip(norm.named_parameters(), old.parameters()):
            assert torch.equal(a.grad, b.grad), (kind, step, name)
        if kind == "rbn":
            assert torch.equal(norm.penalty, old.penalty), step


@pytest.mark.parametrize("kind", ["rbn", "renorm"])
def test_momentum_none_is_the_cumulative_average(kind):
    """update_running_stats gives Regularized BN and Batch Renorm momentum=None."""
    norm = lu.make_norm(kind, C, momentum=None)
    means, variances = [], []
    for step in range(4):
        x = randn(3, 5, C, seed=step) * (step + 1) + step
        mean, var, n = lu.MaskedBatchNorm.batch_stats(x)
        means.append(mean)
        variances.append(var if kind == "rbn" else var * n / (n - 1))  # rbn: biased
        norm(x)
    torch.testing.assert_close(norm.running_mean, torch.stack(means).mean(0))
    torch.testing.assert_close(norm.running_var, torch.stack(variances).mean(0))


@pytest.mark.parametrize(
    "factory, kwargs, name",
    [
        (lu.DyT, {"alpha0": float("inf")}, "alpha0"),
        (lu.DyT, {"alpha0": float("nan")}, "alpha0"),
        (lu.BatchRenorm, {"r_max": float("nan")}, "r_max"),
        (lu.BatchRenorm, {"r_max": float("inf")}, "r_max"),
        (lu.BatchRenorm, {"d_max": float("nan")}, "d_max"),
        (lu.RegularizedBatchNorm, {"penalty_mean": float("nan")}, "penalty_mean"),
        (lu.RegularizedBatchNorm, {"penalty_var": float("inf")}, "penalty_var"),
        (lu.PowerNorm, {"alpha_fwd": float("nan")}, "alpha_fwd"),
        (lu.PowerNorm, {"alpha_bkw": float("inf")}, "alpha_bkw"),
    ],
)
def test_non_finite_hyperparameters_are_refused_at_construction(factory, kwargs, name):
    """NaN/inf settings would give NaN outputs steps later: refused, named, at once."""
    with pytest.raises(ValueError, match=f"finite {name}"):
        factory(C, **kwargs)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: lu.PowerNorm(C, groups=2.0), "groups"),
        (lambda: lu.PowerNorm(C, warmup_steps=1.5), "warmup_steps"),
        (lambda: lu.BatchRenorm(C, warmup_steps=2.5), "warmup_steps"),
        (lambda: lu.GhostBatchNorm(C, group=2.5), "group"),
        (lambda: lu.group_scale(randn(1, 2, C), 2.0), "groups"),
        (lambda: lu.DyT(C, alpha0="0.5"), "alpha0"),
        (lambda: lu.RegularizedBatchNorm(C, penalty_mean=True), "penalty_mean"),
    ],
)
def test_counts_and_rates_of_the_wrong_type_are_refused_naming_the_argument(
    build, name
):
    with pytest.raises(TypeError, match=f"expected {name} to be"):
        build()


@pytest.mark.parametrize("simplified", [False, True])
@pytest.mark.parametrize("garbage", [float("nan"), float("inf")])
def test_powernorm_pads_holding_nan_or_inf_reach_no_gradient_or_buffer(
    simplified, garbage
):
    mask = lu.lengths_to_padding_mask(torch.tensor([5, 3, 4]), 5)
    norm = lu.PowerNorm(C, simplified=simplified, warmup_steps=1)
    clean = copy.deepcopy(norm)
    for step in range(3):  # warm-up, then the running statistic; nu updated each step
        x = randn(3, 5, C, seed=step)
        dirty = x.masked_fill(mask.unsqueeze(-1), garbage).requires_grad_()
        x = x.masked_fill(mask.unsqueeze(-1), 0.0).requires_grad_()
        g = randn(3, 5, C, seed=10 + step).masked_fill(mask.unsqueeze(-1), 0.0)
        (norm(dirty, mask) * g).sum().backward()
        (clean(x, mask) * g).sum().backward()
        assert torch.equal(dirty.grad, x.grad), step
        assert torch.equal(norm.nu, clean.nu) and torch.isfinite(norm.nu).all()
        assert torch.equal(norm.running_phi, clean.running_phi)
        for a, b in zip(norm.parameters(), clean.parameters()):
            assert torch.equal(a.grad, b.grad), step
