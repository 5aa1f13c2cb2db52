"""lnbn_utils.train: the training loop, evaluation and its validation."""

import pytest
import torch
from tiny_models import tiny_classifier

import lnbn_utils as lu


def setup(kind="batch", seed=0):
    g = lu.seed_everything(seed)
    corpus = lu.CharCorpus()
    cfg = lu.TransformerConfig(
        vocab_size=corpus.vocab_size, block_size=16, n_layer=1, n_embd=16, norm=kind
    )
    model = lu.TinyTransformer(cfg)
    val = [corpus.batch("val", 4, 16, torch.Generator().manual_seed(123))]
    return model, (lambda: corpus.batch("train", 4, 16, g)), val


def test_train_lowers_the_loss_and_records_history():
    model, batch_fn, val = setup("layer")
    hist = lu.train(model, batch_fn, steps=60, lr=3e-3, val_batches=val, eval_every=30)
    assert len(hist.train_loss) == len(hist.grad_norm) == 60
    assert hist.eval_steps == [30, 60]
    assert sum(hist.train_loss[-10:]) / 10 < sum(hist.train_loss[:10]) / 10 - 0.5
    # LayerNorm has no batch statistics: train-mode and eval-mode losses agree
    assert hist.val_loss_train_mode == pytest.approx(hist.val_loss_eval_mode)


def test_train_is_reproducible():
    a = lu.train(*setup("batch")[:2], steps=5)
    b = lu.train(*setup("batch")[:2], steps=5)
    assert a.train_loss == b.train_loss


def test_train_matches_a_per_parameter_adamw_loop():
    """The foreach AdamW that train() uses changes the speed, not a single bit."""
    hist = lu.train(*setup("batch")[:2], steps=8, lr=1e-2, weight_decay=0.1)
    model, batch_fn, _ = setup("batch")
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-2, weight_decay=0.1, foreach=False
    )
    losses = []
    for _ in range(8):
        loss = lu.lm_loss(model, batch_fn())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        losses.append(float(loss.detach()))
        opt.step()
    assert hist.train_loss == losses


def test_evaluate_leaves_batchnorm_buffers_unchanged():
    model, batch_fn, val = setup("batch")
    lu.train(model, batch_fn, steps=3)
    before = [b.clone() for b in model.buffers()]
    lu.evaluate(model, val, mode="train")
    assert all(torch.equal(x, y) for x, y in zip(before, model.buffers()))
    with pytest.raises(ValueError, match="mode 'train' or 'eval'"):
        lu.evaluate(model, val, mode="test")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(steps=0), ValueError, "steps >= 1, got steps=0"),
        (dict(steps=2.5), TypeError, "steps to be an int, got 2.5"),
        (dict(lr=0.0), ValueError, "finite lr > 0, got lr=0.0"),
        (dict(lr=float("nan")), ValueError, "finite lr > 0, got lr=nan"),
        (dict(lr=float("inf")), ValueError, "finite lr > 0, got lr=inf"),
        (dict(lr="3e-3"), TypeError, "lr to be a float"),
        (dict(warmup_steps=-5), ValueError, "warmup_steps >= 0.*warmup_steps=-5"),
        (dict(eval_every=-1), ValueError, "eval_every >= 0.*eval_every=-1"),
        (
            dict(grad_clip=-1.0),
            ValueError,
            "grad_clip None or a finite value > 0, got -1.0",
        ),
        (
            dict(grad_clip=0.0),
            ValueError,
            "grad_clip None or a finite value > 0, got 0.0",
        ),
        (
            dict(grad_clip=float("nan")),
            ValueError,
            "grad_clip None or a finite value > 0",
        ),
        (dict(weight_decay=-0.1), ValueError, "finite weight_decay >= 0, got -0.1"),
        (dict(eval_every=5), ValueError, "val_batches for eval_every=5, got none"),
        (dict(extra_loss=3), TypeError, "extra_loss None or callable, got int"),
    ],
)
def test_train_rejects_bad_arguments(kwargs, error, match):
    model, batch_fn, _ = setup("layer")
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(error, match=match):
        lu.train(model, batch_fn, **(dict(steps=3) | kwargs))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_train_rejects_non_callables():
    model, batch_fn, _ = setup("layer")
    with pytest.raises(TypeError, match="batch_fn to be callable, got tuple"):
        lu.train(model, batch_fn(), steps=1)
    with pytest.raises(TypeError, match="loss_fn to be callable, got str"):
        lu.train(model, batch_fn, "lm", steps=1)


def test_evaluate_on_no_data_is_a_clear_error():
    model, _, _ = setup("layer")
    with pytest.raises(ValueError, match="at least one batch to evaluate on, got none"):
        lu.evaluate(model, [])


def test_evaluating_restores_buffers_and_flags_even_after_an_error():
    model, batch_fn, val = setup("batch")
    lu.train(model, batch_fn, steps=2)
    model.blocks[0].train()  # mixed flags survive an evaluation
    flags = [m.training for m in model.modules()]
    before = [b.clone() for b in model.buffers()]
    with pytest.raises(RuntimeError, match="boom"):
        with lu.evaluating(model, "train"):
            model(val[0][0])
            raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(x, y) for x, y in zip(before, model.buffers()))


def classifier_setup(norm, seed=0):
    return tiny_classifier(norm, seed, vocab_size=10, block_size=24)


def pad_more(batch, extra, pad_id):
    """The same batch with ``extra`` more pad positions holding ``pad_id``."""
    tokens, mask, labels = batch
    B = tokens.shape[0]
    tokens = torch.cat(
        [tokens.masked_fill(mask, pad_id), torch.full((B, extra), pad_id)], 1
    )
    mask = torch.cat([mask, torch.ones(B, extra, dtype=torch.bool)], 1)
    return tokens, mask, labels


@pytest.mark.parametrize("norm", ["masked_batch", "layer"])
def test_training_and_evaluation_ignore_padding(norm):
    """Everything a padded batch feeds into: the loss, every gradient, the running
    statistics, and evaluation in both modes. (Whole lu.train runs are not compared:
    AdamW turns the rounding noise of gradients that are 0 in exact arithmetic, such as
    a bias right before a BatchNorm, into full-size steps.)"""
    task = lu.VariableLengthTask(vocab_size=10, min_len=2, max_len=12)
    batches = [task.batch(8, torch.Generator().manual_seed(i)) for i in range(2)]
    padded = [pad_more(b, extra=5 + i, pad_id=3 + i) for i, b in enumerate(batches)]
    runs = []
    for data in (batches, padded):
        model = classifier_setup(norm)
        loss = lu.classifier_loss(model, data[0])
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}
        evals = [
            lu.evaluate(model, data[1:], lu.classifier_loss, m)
            for m in ("train", "eval")
        ]
        runs.append((float(loss.detach()), grads, dict(model.named_buffers()), evals))
    (l1, g1, b1, e1), (l2, g2, b2, e2) = runs
    assert l1 == pytest.approx(l2, abs=1e-6) and e1 == pytest.approx(e2, abs=1e-6)
    for k in g1:
        if k != "pos_emb.weight":  # positions past the shorter batch get no gradient
            torch.testing.assert_close(g2[k], g1[k], atol=1e-6, rtol=1e-4, msg=k)
    for k in b1:
        torch.testing.assert_close(b2[k], b1[k], msg=k)
    T = batches[0][0].shape[1]
    torch.testing.assert_close(g2["pos_emb.weight"][:T], g1["pos_emb.weight"][:T])
    assert torch.all(g2["pos_emb.weight"][T:] == 0)
