"""lnbn_utils.data: the character corpus and the synthetic variable-length task."""

import pytest
import torch

import lnbn_utils as lu


@pytest.fixture(scope="module")
def corpus():
    return lu.CharCorpus()


def test_corpus_is_real_text_and_split_deterministically(corpus):
    assert len(corpus.train) + len(corpus.val) > 400_000
    assert 60 < corpus.vocab_size < 200
    again = lu.CharCorpus()
    assert torch.equal(corpus.val, again.val)
    assert corpus.decode(corpus.encode("the")) == "the"


def test_corpus_batch_targets_are_shifted_inputs(corpus):
    g = torch.Generator().manual_seed(0)
    x, y = corpus.batch("train", 5, 16, g)
    assert x.shape == y.shape == (5, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, _ = corpus.batch("train", 5, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


def test_corpus_bad_input(corpus):
    with pytest.raises(ValueError, match="split 'train' or 'val'"):
        corpus.batch("test", 2, 8, torch.Generator())
    with pytest.raises(ValueError, match="unknown"):
        corpus.encode("\x00")
    with pytest.raises(ValueError, match="at least 100 characters"):
        lu.CharCorpus("short")


def test_variable_length_task_batch():
    task = lu.VariableLengthTask(vocab_size=10, min_len=3, max_len=9)
    tokens, mask, labels = task.batch(64, torch.Generator().manual_seed(0))
    lengths = (~mask).sum(1)
    assert (
        lengths.min() >= 3
        and lengths.max() <= 9
        and tokens.shape[1] == int(lengths.max())
    )
    assert torch.all(tokens[mask] == task.PAD) and torch.all(tokens[~mask] > 0)
    # the labelled marker is in the majority far more often than not
    ones = ((tokens == 1) & ~mask).sum(1)
    twos = ((tokens == 2) & ~mask).sum(1)
    agree = torch.where(labels == 0, ones > twos, twos > ones).float().mean()
    assert agree > 0.5


def test_variable_length_task_length_probs_and_errors():
    task = lu.VariableLengthTask(min_len=2, max_len=4, length_probs=(0.0, 0.0, 1.0))
    assert torch.all(task.sample_lengths(20, torch.Generator()) == 4)
    with pytest.raises(ValueError, match="expected 3 length_probs"):
        lu.VariableLengthTask(min_len=2, max_len=4, length_probs=(1.0,))
    with pytest.raises(ValueError, match="min_len <= max_len"):
        lu.VariableLengthTask(min_len=5, max_len=4)


@pytest.mark.parametrize("val_fraction", [1e-6, 0.001])
def test_corpus_refuses_a_split_that_leaves_an_empty_side(val_fraction):
    text = "abcdefghij" * 20  # 200 characters: 0 validation characters at 0.001
    with pytest.raises(
        ValueError, match="at least 2 characters in each split, got .* val"
    ):
        lu.CharCorpus(text, val_fraction=val_fraction)
    with pytest.raises(ValueError, match="0 < val_fraction < 1"):
        lu.CharCorpus(text, val_fraction=1.0)
    with pytest.raises(TypeError, match="text to be a str, got list"):
        lu.CharCorpus(list(text))


def test_corpus_with_a_small_val_fraction_still_has_both_splits():
    corpus = lu.CharCorpus("abcdefghij" * 20, val_fraction=0.01)
    assert len(corpus.val) == 2 and len(corpus.train) == 198


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(marker_prob=1.5), ValueError, "0 <= marker_prob <= 1, got 1.5"),
        (dict(marker_prob=-0.1), ValueError, "0 <= marker_prob <= 1, got -0.1"),
        (dict(marker_bias=2.0), ValueError, "0 <= marker_bias <= 1, got 2.0"),
        (dict(marker_bias=float("nan")), ValueError, "marker_bias"),
        (dict(marker_prob="0.3"), TypeError, "marker_prob to be a float"),
        (
            dict(min_len=2, max_len=3, length_probs=(-0.5, 1.5)),
            ValueError,
            r"length_probs in \[0, 1\]",
        ),
        (
            dict(min_len=2, max_len=3, length_probs=(0.0, 0.0)),
            ValueError,
            "positive sum",
        ),
        (
            dict(min_len=2, max_len=3, length_probs=(float("nan"), 1.0)),
            ValueError,
            "length_probs",
        ),
    ],
)
def test_variable_length_task_refuses_bad_probabilities(kwargs, error, match):
    with pytest.raises(error, match=match):
        lu.VariableLengthTask(**kwargs)
