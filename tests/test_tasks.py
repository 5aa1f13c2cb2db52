import pytest
import torch

import lnbn_utils as lu


def test_majority_task_labels_are_the_named_markers_majority():
    task = lu.MajorityTask(min_len=3, max_len=20)
    tokens, mask, labels = task.batch(256, torch.Generator().manual_seed(0))
    lengths = (~mask).sum(1)
    assert int(lengths.min()) >= 3 and int(lengths.max()) <= 20
    assert (tokens[mask] == task.PAD).all() and (tokens[~mask] != task.PAD).all()
    assert ((tokens[:, 0] == 3) | (tokens[:, 0] == 4)).all()  # the query comes first
    n_named, n_other = task.counts(tokens)
    assert (n_named != n_other).all()  # no ties
    torch.testing.assert_close(labels, (n_named > n_other).long())
    assert 0.35 < labels.double().mean().item() < 0.65  # both classes occur


def test_majority_task_is_seeded_and_takes_lengths():
    task = lu.MajorityTask()
    a = task.batch(8, torch.Generator().manual_seed(1), lengths=[5] * 8, T=9)
    b = task.batch(8, torch.Generator().manual_seed(1), lengths=[5] * 8, T=9)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    assert a[0].shape == (8, 9) and a[1][:, 5:].all() and not a[1][:, :5].any()


def test_majority_task_rejects_bad_arguments():
    with pytest.raises(ValueError, match="vocab_size >= 6"):
        lu.MajorityTask(vocab_size=5)
    with pytest.raises(ValueError, match="min_len <= max_len"):
        lu.MajorityTask(min_len=5, max_len=4)
    with pytest.raises(ValueError, match="marker_prob"):
        lu.MajorityTask(marker_prob=0.0)
    with pytest.raises(ValueError, match="lengths >= 2"):
        lu.MajorityTask(min_len=2).batch(2, torch.Generator(), lengths=[1, 3])


TASKS = [lu.MajorityTask(), lu.VariableLengthTask()]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: type(t).__name__)
@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((0,), {}, ValueError, "batch_size >= 1"),
        ((-1,), {}, ValueError, "batch_size >= 1"),
        ((2.5,), {}, TypeError, "batch_size to be an int"),
        ((2,), {"lengths": []}, ValueError, "one length per sequence"),
        ((4,), {"lengths": [5, 6]}, ValueError, "one length per sequence"),
        ((2,), {"lengths": [5.0, 6.0]}, TypeError, "integer lengths"),
        ((2,), {"lengths": [0, 6]}, ValueError, "lengths >= "),
        ((2,), {"T": -1}, ValueError, "T"),
    ],
)
def test_batch_refuses_bad_sizes_and_lengths(task, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        task.batch(*args, torch.Generator().manual_seed(0), **kwargs)


@pytest.mark.parametrize("task", TASKS, ids=lambda t: type(t).__name__)
def test_batch_refuses_a_generator_that_is_not_one(task):
    with pytest.raises(TypeError, match="torch.Generator"):
        task.batch(2, 0)


def test_both_tasks_live_in_tasks_and_keep_their_import_paths():
    from lnbn_utils.data import VariableLengthTask

    assert VariableLengthTask is lu.tasks.VariableLengthTask is lu.VariableLengthTask
    assert {"MajorityTask", "VariableLengthTask"} <= set(lu.tasks.__all__)


def test_majority_classifier_is_seeded_and_trains():
    task = lu.MajorityTask(max_len=8)
    a = lu.majority_classifier(task, "masked_batch", "rotary", seed=3)
    b = lu.majority_classifier(task, "masked_batch", "rotary", seed=3)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)
    assert not a.cfg.causal and a.cfg.n_classes == 2 and a.cfg.position == "rotary"
    m = lu.train_majority_classifier(task, "layer", seed=0, steps=3, buckets=True)
    tokens, mask, _ = task.batch(4, torch.Generator().manual_seed(0))
    assert m(tokens, mask).shape == (4, 2)
    with pytest.raises(TypeError, match="buckets as a bool"):
        lu.train_majority_classifier(task, "layer", seed=0, steps=1, buckets=1)
