"""Tests for lnbn_utils.charlm_experiment: char-LM runs, stability sweep, controls."""

import copy
import math

import pytest
import torch

import lnbn_utils as lu

C = 6


@pytest.fixture(scope="module")
def corpus():
    return lu.CharCorpus()


# --- GhostBatchNorm and PositionBatchNorm ---------------------------------------------


def test_ghost_bn_with_one_group_is_token_bn():
    torch.manual_seed(0)
    x = torch.randn(2, 8, C) * 3 + 1
    ghost, ref = lu.GhostBatchNorm(C, group=16), lu.TokenBatchNorm(C)
    torch.testing.assert_close(ghost(x), ref(x))
    torch.testing.assert_close(ghost.running_mean, ref.running_mean)
    torch.testing.assert_close(ghost.running_var, ref.running_var)
    ghost.eval(), ref.eval()
    torch.testing.assert_close(ghost(x), ref(x))


def test_ghost_bn_normalizes_each_group_of_consecutive_tokens():
    x = torch.randn(2, 8, C)
    y = lu.GhostBatchNorm(C, group=4)(x).reshape(
        4, 4, C
    )  # (G, group, C) in reading order
    torch.testing.assert_close(y.mean(1), torch.zeros(4, C), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        y.var(1, unbiased=False), torch.ones(4, C), atol=1e-3, rtol=0
    )


def test_position_bn_has_no_look_ahead():
    """Changing tokens after position t moves no output at positions <= t."""
    torch.manual_seed(0)
    x = torch.randn(4, 6, C)
    later = x.clone()
    later[:, 3:] = torch.randn(4, 3, C) * 5
    norm = lu.PositionBatchNorm(C)
    torch.testing.assert_close(norm(x)[:, :3], norm(later)[:, :3])
    ghost = lu.GhostBatchNorm(C, group=6)  # one group per window: outputs do move
    assert not torch.allclose(ghost(x)[:, :3], ghost(later)[:, :3])


def test_position_bn_statistics_are_over_the_batch_axis():
    x = torch.randn(5, 3, C)
    mean, var, n = lu.PositionBatchNorm(C).batch_stats(x)
    torch.testing.assert_close(mean, x.mean(0))
    torch.testing.assert_close(var, x.var(0, unbiased=False))
    assert n == 5


def legacy_group_forward(norm, x):
    """The group BNs' float32 forward before the dtype policy, written out."""
    if not norm.training:
        return (x - norm.running_mean) * torch.rsqrt(
            norm.running_var + norm.eps
        ) * norm.weight + norm.bias
    xg = norm._groups(x)
    mean, var, n = norm.batch_stats(x)
    with torch.no_grad():
        norm.running_mean.lerp_(mean.mean(0), norm.momentum)
        norm.running_var.lerp_((var * n / (n - 1)).mean(0), norm.momentum)
    yg = (xg - mean[:, None]) * torch.rsqrt(var[:, None] + norm.eps)
    return norm._ungroup(yg, x.shape) * norm.weight + norm.bias


@pytest.mark.parametrize("kind", ["ghost_batch", "position_batch"])
def test_group_bns_float32_results_are_bit_identical_to_the_old_code(kind):
    """Computing float16/bfloat16 input in float32 left float32 numerics unchanged."""
    norm = lu.make_norm(kind, C)
    with torch.no_grad():
        norm.weight.add_(torch.linspace(-0.3, 0.3, C))
        norm.bias.add_(torch.linspace(0.2, -0.1, C))
    old = copy.deepcopy(norm)
    gen = torch.Generator().manual_seed(0)
    for step in range(4):  # 3 training steps, then eval
        norm.train(step < 3), old.train(step < 3)
        x = torch.randn(4, 8, C, generator=gen) * (step + 1) + step
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        g = torch.randn(4, 8, C, generator=gen)
        ya, yb = norm(xa), legacy_group_forward(old, xb)
        (ya * g).sum().backward()
        (yb * g).sum().backward()
        assert torch.equal(ya, yb) and torch.equal(xa.grad, xb.grad), step
        for a, b in zip(norm.buffers(), old.buffers()):
            assert torch.equal(a, b), step
        for a, b in zip(norm.parameters(), old.parameters()):
            assert torch.equal(a.grad, b.grad), step


def test_group_bns_are_registered_kinds():
    assert isinstance(lu.make_norm("position_batch", C), lu.PositionBatchNorm)
    assert lu.make_norm("ghost_batch", C, group=32).group == 32


@pytest.mark.parametrize(
    "make, x, match",
    [
        (
            lambda: lu.GhostBatchNorm(C, group=5),
            torch.zeros(2, 4, C),
            "multiple of group=5",
        ),
        (lambda: lu.GhostBatchNorm(C, group=1), None, "group >= 2"),
        (lambda: lu.PositionBatchNorm(C), torch.zeros(1, 4, C), "at least 2 sequences"),
    ],
)
def test_group_bns_reject_bad_input(make, x, match):
    with pytest.raises(ValueError, match=match):
        make()(x)


def test_tid_recorder_reads_group_statistics():
    norm = lu.GhostBatchNorm(C, group=4)
    x = torch.randn(2, 8, C)
    with lu.TIDRecorder(torch.nn.ModuleDict({"n": norm})) as rec:
        norm(x)
    groups = x.reshape(4, 4, C)
    expected = lu.tid(
        groups.mean(1), groups.var(1, unbiased=False), torch.zeros(C), torch.ones(C)
    )
    assert rec.mean_tid["n"] == [pytest.approx(expected[0])]


# --- train_char_lm and token_losses ---------------------------------------------------


def test_train_char_lm_records_history_and_tid(corpus):
    torch.set_num_threads(1)
    run = lu.train_char_lm(
        corpus, "batch", 2, 8, steps=6, seed=0, n_val_batches=2, record_tid=True
    )
    h = run.history
    assert len(h.train_loss) == len(h.grad_norm) == 6
    assert (
        h.eval_steps == [6]
        and len(h.val_loss_train_mode) == len(h.val_loss_eval_mode) == 1
    )
    assert run.tid.as_tensor("mean").shape == (5, 6)  # 5 BN layers, one entry per step
    assert not run.model.training and not run.tid._handles  # eval mode, hooks removed


def test_train_char_lm_is_reproducible(corpus):
    torch.set_num_threads(1)
    a = lu.train_char_lm(corpus, "layer", 2, 8, steps=4, seed=3, n_val_batches=2)
    b = lu.train_char_lm(corpus, "layer", 2, 8, steps=4, seed=3, n_val_batches=2)
    assert a.history.train_loss == b.history.train_loss and a.tid is None
    h = a.history
    assert h.val_loss_train_mode == h.val_loss_eval_mode  # LayerNorm: one function


def test_train_char_lm_same_init_for_every_norm(corpus):
    torch.set_num_threads(1)
    kw = dict(steps=1, seed=11, lr=1e-12, n_val_batches=1)
    runs = [lu.train_char_lm(corpus, k, 1, 4, **kw) for k in ("layer", "none")]
    a, b = (r.model for r in runs)
    torch.testing.assert_close(a.tok_emb.weight, b.tok_emb.weight)
    torch.testing.assert_close(a.blocks[1].mlp[2].weight, b.blocks[1].mlp[2].weight)


def test_train_char_lm_masked_bn_equals_bn_without_padding(corpus):
    torch.set_num_threads(1)
    bn = lu.train_char_lm(corpus, "batch", 2, 8, steps=5, seed=1, n_val_batches=2)
    mbn = lu.train_char_lm(
        corpus, "masked_batch", 2, 8, steps=5, seed=1, n_val_batches=2
    )
    assert bn.history.train_loss == pytest.approx(mbn.history.train_loss, rel=1e-4)


def test_train_char_lm_norm_kwargs_reach_every_norm(corpus):
    torch.set_num_threads(1)
    kw = dict(steps=2, seed=0, n_val_batches=0, norm_kwargs={"group": 4})
    run = lu.train_char_lm(corpus, "ghost_batch", 2, 8, **kw)
    groups = {m.group for m in run.model.modules() if isinstance(m, lu.GhostBatchNorm)}
    assert groups == {4} and len(run.history.val_loss_eval_mode) == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size >= 1"),
        (dict(block_size=1), "block_size >= 2"),
        (dict(n_val_batches=-1), "n_val_batches"),
    ],
)
def test_train_char_lm_rejects_bad_arguments(corpus, kwargs, match):
    args = dict(batch_size=2, block_size=8, steps=1, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        lu.train_char_lm(corpus, "layer", **args)


def test_train_char_lm_tid_needs_batchnorm(corpus):
    with pytest.raises(ValueError, match="running_mean/running_var"):
        lu.train_char_lm(corpus, "layer", 2, 8, steps=1, seed=0, record_tid=True)


def test_token_losses_average_to_evaluate_and_leave_the_model_unchanged(corpus):
    torch.set_num_threads(1)
    run = lu.train_char_lm(corpus, "batch", 2, 8, steps=3, seed=0, n_val_batches=0)
    g = torch.Generator().manual_seed(0)
    val = [corpus.batch("val", 2, 8, g) for _ in range(3)]
    before = [b.clone() for b in run.model.buffers()]
    for mode in ("train", "eval"):
        losses = lu.token_losses(run.model, val, mode)
        assert losses.shape == (6, 8)
        assert float(losses.mean()) == pytest.approx(
            lu.evaluate(run.model, val, mode=mode), rel=1e-5
        )
    assert all(torch.equal(a, b) for a, b in zip(before, run.model.buffers()))
    with pytest.raises(ValueError, match="mode 'train' or 'eval'"):
        lu.token_losses(run.model, val, "test")


def test_unigram_losses_are_the_frequency_entropy_on_training_text(corpus):
    g = torch.Generator().manual_seed(0)
    train_batches = [corpus.batch("train", 64, 64, g) for _ in range(4)]
    losses = lu.unigram_token_losses(corpus, train_batches)
    p = torch.bincount(corpus.train, minlength=corpus.vocab_size).float()
    p = p[p > 0] / p.sum()
    entropy = float(-(p * p.log()).sum())
    assert losses.shape == (256, 64) and float(losses.mean()) == pytest.approx(
        entropy, abs=0.05
    )


# --- the stability sweep --------------------------------------------------------------

TINY = lu.StabilitySetup(n_layer=2, steps=4, warmup_steps=2, n_val_batches=2)


def test_stability_run_trains_and_reports(corpus):
    torch.set_num_threads(1)
    r = lu.stability_run(corpus, "layer", 3e-3, seed=0, setup=TINY)
    assert len(r.train_loss) == 4 and math.isfinite(r.val_loss) and not r.diverged
    assert r.failed  # 4 steps cannot beat the unigram baseline (~3.3 nats)


def test_stability_run_flags_divergence(corpus):
    torch.set_num_threads(1)
    r = lu.stability_run(corpus, "none", 1e3, seed=0, setup=TINY)
    assert r.diverged and r.failed and r.val_loss == math.inf


def test_stability_sweep_keys_and_reproducibility(corpus):
    torch.set_num_threads(1)
    res = lu.stability_sweep(corpus, ["layer", "none"], [1e-3], [0, 1], TINY)
    assert sorted(res) == [
        ("layer", 1e-3, 0),
        ("layer", 1e-3, 1),
        ("none", 1e-3, 0),
        ("none", 1e-3, 1),
    ]
    again = lu.stability_run(corpus, "none", 1e-3, seed=1, setup=TINY)
    assert again.val_loss == res["none", 1e-3, 1].val_loss
    with pytest.raises(ValueError, match="non-empty"):
        lu.stability_sweep(corpus, [], [1e-3], [0], TINY)


def test_line_batch_pads_natural_lines(corpus):
    g = torch.Generator().manual_seed(0)
    x, y, pad = lu.line_batch(corpus, "val", 6, g, (8, 32))
    lengths = (~pad).sum(1)
    assert x.shape == y.shape == pad.shape and int(lengths.max()) == x.shape[1]
    assert bool((lengths >= 8).all() and (lengths <= 32).all())
    nl = corpus.stoi["\n"]
    for b, n in enumerate(lengths.tolist()):  # each line ends by predicting its newline
        assert y[b, n - 1] == nl and bool((y[b, n:] == -100).all())
        assert torch.equal(x[b, 1:n], y[b, : n - 1])
    with pytest.raises(ValueError, match="split"):
        lu.line_batch(corpus, "test", 2, g)


def test_stability_run_on_padded_lines_and_final_norm(corpus):
    torch.set_num_threads(1)
    pad = lu.StabilitySetup(
        n_layer=2, steps=4, warmup_steps=2, n_val_batches=2, block_size=16,
        lengths=(8, 16), final_norm="layer",
    )  # fmt: skip
    r = lu.stability_run(corpus, "none", 3e-3, seed=0, setup=pad)
    assert math.isfinite(r.val_loss) and len(r.grad_norm) == 4 and r.slow
    assert r.max_grad_norm == max(r.grad_norm) and not r.blew_up
    with pytest.raises(ValueError, match="lengths"):
        lu.StabilitySetup(block_size=16, lengths=(8, 32))
    with pytest.raises(ValueError, match="final_norm"):
        lu.build_char_lm(10, 8, "none", norm_position="post", final_norm="layer")
    m = lu.build_char_lm(10, 8, "none", final_norm="layer")
    assert isinstance(m.norm_f, lu.LayerNorm) and isinstance(
        m.blocks[0].norm1, lu.NoNorm
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"seed": 1.5}, "seed"),
        ({"seed": "0"}, "seed"),
        ({"steps": 1.5}, "steps"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"block_size": 8.0}, "block_size"),
    ],
)
def test_train_char_lm_refuses_numbers_that_are_not_ints(corpus, kwargs, name):
    args = dict(batch_size=2, block_size=8, steps=1, seed=0, n_val_batches=0)
    args.update(kwargs)
    with pytest.raises(TypeError, match=f"expected {name} to be an int"):
        lu.train_char_lm(corpus, "layer", **args)
