import pytest
import torch

import lnbn_utils as lu


def setup(kind="batch", seed=0):
    g = lu.seed_everything(seed)
    corpus = lu.CharCorpus()
    cfg = lu.TransformerConfig(vocab_size=corpus.vocab_size, block_size=16, n_layer=1, n_embd=16, norm=kind)
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


def test_evaluate_leaves_batchnorm_buffers_unchanged():
    model, batch_fn, val = setup("batch")
    lu.train(model, batch_fn, steps=3)
    before = [b.clone() for b in model.buffers()]
    lu.evaluate(model, val, mode="train")
    assert all(torch.equal(x, y) for x, y in zip(before, model.buffers()))
    with pytest.raises(ValueError, match="mode 'train' or 'eval'"):
        lu.evaluate(model, val, mode="test")


def test_train_rejects_bad_arguments():
    model, batch_fn, _ = setup("layer")
    with pytest.raises(ValueError, match="steps >= 1"):
        lu.train(model, batch_fn, steps=0)


def test_classifier_loss_runs():
    task = lu.VariableLengthTask(vocab_size=10)
    g = torch.Generator().manual_seed(0)
    model = lu.TinyTransformer(lu.TransformerConfig(vocab_size=10, block_size=32, n_layer=1, n_embd=16, causal=False, n_classes=2))
    hist = lu.train(model, lambda: task.batch(16, g), lu.classifier_loss, steps=5)
    assert len(hist.train_loss) == 5
