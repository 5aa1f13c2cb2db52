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
    assert lengths.min() >= 3 and lengths.max() <= 9 and tokens.shape[1] == int(lengths.max())
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


def test_padding_helpers():
    mask = lu.lengths_to_padding_mask([1, 3], 3)
    assert mask.tolist() == [[False, True, True], [False, False, False]]
    padded, m = lu.pad_sequences([torch.ones(2, 4), torch.ones(1, 4)], pad_value=-1.0)
    assert padded.shape == (2, 2, 4) and padded[1, 1, 0] == -1.0 and m.tolist() == [[False, False], [False, True]]
    with pytest.raises(ValueError, match="<= T=2"):
        lu.lengths_to_padding_mask([3], 2)
    with pytest.raises(ValueError, match="empty list"):
        lu.pad_sequences([])
    am = lu.attention_mask(mask, 3, causal=True)
    assert am.shape == (2, 1, 3, 3) and not am[0, 0, 2, 1] and am[1, 0, 2, 1] and not am[1, 0, 0, 1]
