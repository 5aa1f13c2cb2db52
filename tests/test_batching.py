"""lnbn_utils.batching: batching strategies and batch-by-batch prediction."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import tiny_classifier

import lnbn_utils as lu


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def covers_each_index_once(batches, n):
    return sorted(torch.cat(batches).tolist()) == list(range(n))


def test_random_batches_partition_the_indices():
    batches = lu.random_batches(10, 4, gen())
    assert [len(b) for b in batches] == [4, 4, 2]
    assert covers_each_index_once(batches, 10)
    assert [b.tolist() for b in batches] == [
        b.tolist() for b in lu.random_batches(10, 4, gen())
    ]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=60),
    st.integers(1, 9),
    st.integers(0, 5),
)
def test_bucketed_batches_are_a_partition_into_length_sorted_runs(
    lengths, batch_size, seed
):
    lengths = torch.tensor(lengths)
    batches = lu.bucketed_batches(lengths, batch_size, gen(seed))
    assert covers_each_index_once(batches, len(lengths))
    assert sum(len(b) < batch_size for b in batches) <= 1
    # sorted by the longest member, consecutive buckets do not overlap in length
    runs = sorted((int(lengths[b].min()), int(lengths[b].max())) for b in batches)
    assert all(hi <= lo_next for (_, hi), (lo_next, _) in zip(runs, runs[1:]))


def test_buckets_waste_less_padding_than_random_batches_but_vary_more_in_tokens():
    lengths = lu.VariableLengthTask().sample_lengths(2048, gen())
    real_r, pad_r = lu.batch_token_counts(lengths, lu.random_batches(2048, 32, gen(1)))
    real_b, pad_b = lu.batch_token_counts(
        lengths, lu.bucketed_batches(lengths, 32, gen(1))
    )
    assert real_r.sum() == real_b.sum() == lengths.sum()
    assert 1 - real_b.sum() / pad_b.sum() < 0.05 < 0.3 < 1 - real_r.sum() / pad_r.sum()
    assert real_b.double().std() > 3 * real_r.double().std()


def test_batch_token_counts_by_hand():
    real, padded = lu.batch_token_counts(
        [3, 1, 4, 2], [torch.tensor([0, 1]), torch.tensor([2, 3])]
    )
    assert real.tolist() == [4, 6] and padded.tolist() == [6, 8]


def test_single_batches():
    assert [b.tolist() for b in lu.single_batches(3)] == [[0], [1], [2]]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: lu.random_batches(0, 2, gen()), ValueError, "positive int"),
        (lambda: lu.random_batches(4, 0, gen()), ValueError, "batch_size"),
        (lambda: lu.bucketed_batches([3, 0], 2, gen()), ValueError, "length >= 1"),
        (
            lambda: lu.bucketed_batches(torch.ones(2, 2, dtype=torch.long), 2, gen()),
            ValueError,
            r"1-D tensor of lengths, got shape \(2, 2\)",
        ),
        (
            lambda: lu.bucketed_batches([1.5, 2.0], 2, gen()),
            TypeError,
            "expected integer lengths, got dtype torch.float32",
        ),
        (lambda: lu.batch_token_counts([2, 3], []), ValueError, "at least one batch"),
        (lambda: lu.single_batches(0), ValueError, "positive int"),
    ],
)
def test_bad_inputs_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()


def classifier(norm, seed=0):
    return tiny_classifier(norm, seed, vocab_size=16, block_size=40)


def dataset(n=24, seed=0):
    task = lu.VariableLengthTask()
    lengths = task.sample_lengths(n, gen(seed))
    tokens, _, labels = task.batch(n, gen(seed), lengths=lengths)
    return tokens, lengths


def test_layernorm_predictions_do_not_depend_on_the_batching():
    model, (tokens, lengths) = classifier("layer"), dataset()
    ref = lu.predict_batched(model, tokens, lengths, lu.single_batches(len(lengths)))
    for mode in ("train", "eval"):
        for batches, T in [
            (lu.random_batches(len(lengths), 8, gen()), None),
            (lu.bucketed_batches(lengths, 8, gen()), None),
            (lu.random_batches(len(lengths), 8, gen()), 40),
        ]:
            torch.testing.assert_close(
                lu.predict_batched(model, tokens, lengths, batches, mode, T=T),
                ref,
                atol=1e-5,
                rtol=0,
            )


def test_masked_batchnorm_ignores_extra_padding_naive_batchnorm_does_not():
    tokens, lengths = dataset()
    batches = lu.random_batches(len(lengths), 8, gen())
    change = {}
    for norm in ("masked_batch", "batch"):
        model = classifier(norm)
        a = lu.predict_batched(model, tokens, lengths, batches, "train")
        b = lu.predict_batched(model, tokens, lengths, batches, "train", T=40)
        change[norm] = (a - b).abs().max().item()
    assert change["masked_batch"] < 1e-5 and change["batch"] > 1e-3, change


def test_predict_batched_leaves_the_model_unchanged():
    model, (tokens, lengths) = classifier("masked_batch"), dataset()
    model.eval()
    before = [b.clone() for b in model.buffers()]
    lu.predict_batched(
        model, tokens, lengths, lu.random_batches(len(lengths), 8, gen()), "train"
    )
    assert not model.training
    assert all(torch.equal(x, y) for x, y in zip(before, model.buffers()))


def test_predict_batched_rows_and_errors():
    model, (tokens, lengths) = classifier("layer"), dataset()
    out = lu.predict_batched(model, tokens, lengths, [torch.tensor([0, 2])])
    assert (
        out.shape == (len(lengths), 2)
        and out[[0, 2]].isfinite().all()
        and out[1].isnan().all()
    )
    with pytest.raises(ValueError, match="mode 'train' or 'eval'"):
        lu.predict_batched(model, tokens, lengths, [torch.tensor([0])], mode="test")
    with pytest.raises(ValueError, match="expected tokens of shape"):
        lu.predict_batched(model, tokens[:3], lengths, [torch.tensor([0])])
    with pytest.raises(ValueError, match="expected T >= "):
        lu.predict_batched(model, tokens, lengths, [torch.arange(len(lengths))], T=2)


def test_predict_batched_refuses_no_batches_and_restores_on_error():
    model, (tokens, lengths) = classifier("masked_batch"), dataset()
    with pytest.raises(ValueError, match="at least one batch"):
        lu.predict_batched(model, tokens, lengths, [])
    before = [b.clone() for b in model.buffers()]
    calls = []

    def fail_on_second_batch(module, args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("second batch fails")

    hook = model.register_forward_pre_hook(fail_on_second_batch)
    with pytest.raises(RuntimeError, match="second batch fails"):
        lu.predict_batched(model, tokens, lengths, lu.single_batches(2), "train")
    hook.remove()
    assert model.training  # classifier() leaves it in train mode: unchanged
    assert all(torch.equal(x, y) for x, y in zip(before, model.buffers()))


@settings(max_examples=10, deadline=None)
@given(pad_id=st.integers(0, 15), extra=st.integers(0, 8))
def test_predict_batched_ignores_pad_ids_and_extra_padding(pad_id, extra):
    """Padding invariance for what a padded batch feeds into: masked BN and LN."""
    tokens, lengths = dataset()
    batches = lu.random_batches(len(lengths), 8, gen())
    T = int(lengths.max()) + extra
    for norm in ("masked_batch", "layer"):
        model = classifier(norm)
        for mode in ("train", "eval"):
            ref = lu.predict_batched(model, tokens, lengths, batches, mode)
            got = lu.predict_batched(model, tokens, lengths, batches, mode, T, pad_id)
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_token_budget_batches_partition_within_budget():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(4, 65, (500,), generator=g)
    batches = lu.token_budget_batches(lengths, 512, g)
    assert sorted(torch.cat(batches).tolist()) == list(range(500))
    real, padded = lu.batch_token_counts(lengths, batches)
    assert int(padded.max()) <= 512
    assert 1 - real.sum() / padded.sum() < 0.1  # sorted: little padding


def test_token_budget_batches_refuses_a_budget_below_the_longest():
    with pytest.raises(ValueError, match="longest length 9"):
        lu.token_budget_batches([3, 9], 8, torch.Generator())


BAD_BATCHES = [
    ([torch.tensor([0, 99])], ValueError, "indices in"),  # out of range
    ([torch.tensor([-3])], ValueError, "indices in"),  # negative
    ([torch.tensor([0.0, 1.0])], TypeError, "integer indices"),
    ([torch.tensor([], dtype=torch.long)], ValueError, "non-empty 1-D"),
    ([torch.tensor([[0, 1]])], ValueError, "non-empty 1-D"),
    ([[0, 1.5]], TypeError, "list of ints"),
    (torch.tensor([0, 1]), TypeError, "list of index tensors"),  # not a list
    ([], ValueError, "at least one batch"),
]


@pytest.mark.parametrize("batches, error, match", BAD_BATCHES)
def test_batch_indices_are_checked_before_use(batches, error, match):
    tokens, lengths = dataset()
    with pytest.raises(error, match=match):
        lu.batch_token_counts(lengths, batches)
    with pytest.raises(error, match=match):
        lu.predict_batched(classifier("layer"), tokens, lengths, batches)


def test_predict_batched_refuses_what_would_give_invented_or_wrong_rows():
    tokens, lengths = dataset()
    model, batches = classifier("layer"), [torch.arange(4)]
    longer = lengths.clone()
    longer[0] = tokens.shape[1] + 3  # a sequence longer than its token row
    with pytest.raises(ValueError, match="lengths <= the token rows' length"):
        lu.predict_batched(model, tokens, longer, batches, T=tokens.shape[1] + 3)
    with pytest.raises(TypeError, match="tokens to be a torch.Tensor"):
        lu.predict_batched(model, tokens.tolist(), lengths, batches)
    with pytest.raises(TypeError, match="integer token ids"):
        lu.predict_batched(model, tokens.float(), lengths, batches)
    lm = lu.TinyTransformer(lu.TransformerConfig(vocab_size=16, block_size=40))
    with pytest.raises(ValueError, match="expected a classifier"):
        lu.predict_batched(lm, tokens, lengths, batches)
    with pytest.raises(TypeError, match="pad_id to be an int"):
        lu.predict_batched(model, tokens, lengths, batches, pad_id=0.5)
