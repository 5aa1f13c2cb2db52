"""lnbn_utils.masking: padding masks, padded batches, attention masks, real tokens."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lnbn_utils as lu
from lnbn_utils.masking import real_token_weights


def test_padding_helpers():
    mask = lu.lengths_to_padding_mask([1, 3], 3)
    assert mask.tolist() == [[False, True, True], [False, False, False]]
    padded, m = lu.pad_sequences([torch.ones(2, 4), torch.ones(1, 4)], pad_value=-1.0)
    assert (
        padded.shape == (2, 2, 4)
        and padded[1, 1, 0] == -1.0
        and m.tolist() == [[False, False], [False, True]]
    )
    with pytest.raises(ValueError, match="<= T=2"):
        lu.lengths_to_padding_mask([3], 2)
    with pytest.raises(ValueError, match="empty list"):
        lu.pad_sequences([])
    am = lu.attention_mask(mask, 3, causal=True)
    assert (
        am.shape == (2, 1, 3, 3)
        and not am[0, 0, 2, 1]
        and am[1, 0, 2, 1]
        and not am[1, 0, 0, 1]
    )


@pytest.mark.parametrize(
    "lengths, T, error, match",
    [
        ([1.5, 2.0], 3, TypeError, "integer lengths, got dtype torch.float32"),
        (torch.tensor([2.0, 3.0], dtype=torch.float64), 3, TypeError, "torch.float64"),
        ([True, False], 2, TypeError, "integer lengths, got dtype torch.bool"),
        ([[1, 2]], 3, ValueError, r"1-D tensor of lengths, got shape \(1, 2\)"),
        ([-1, 2], 3, ValueError, "non-negative lengths, got min -1"),
        ([1, 2], 2.0, TypeError, "T to be an int or None, got 2.0"),
        ([1, 2], -1, ValueError, "<= T=-1|T >= 0"),
        ([], None, ValueError, "expected T for an empty batch"),
    ],
)
def test_lengths_to_padding_mask_refuses_bad_input(lengths, T, error, match):
    with pytest.raises(error, match=match):
        lu.lengths_to_padding_mask(lengths, T)


def test_lengths_to_padding_mask_empty_batch_and_tensor_T():
    assert lu.lengths_to_padding_mask([], T=3).shape == (0, 3)
    assert lu.lengths_to_padding_mask([1], T=torch.tensor(2)).tolist() == [
        [False, True]
    ]


def test_pad_sequences_refuses_mismatched_sequences():
    with pytest.raises(ValueError, match=r"trailing shape \(4,\) .*got \(3,\)"):
        lu.pad_sequences([torch.ones(2, 4), torch.ones(1, 3)])
    with pytest.raises(TypeError, match="tensors, got list at index 1"):
        lu.pad_sequences([torch.ones(2, 4), [1.0, 2.0]])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=5), st.integers(0, 3))
def test_real_token_weights_count_the_real_tokens(lengths, extra):
    T = max(lengths) + extra
    mask = lu.lengths_to_padding_mask(lengths, T)
    w, n = real_token_weights(mask, torch.float64)
    assert w.dtype == torch.float64 and w.shape == mask.shape
    assert torch.equal(w, (~mask).double()) and int(n) == sum(lengths)
    w_all, n_all = real_token_weights(None, shape=(len(lengths), T))
    assert torch.all(w_all == 1) and int(n_all) == len(lengths) * T
    with pytest.raises(ValueError, match="shape"):
        real_token_weights(None)


def test_pack_sequences_fills_rows_in_order_and_positions_restart():
    seqs = [torch.tensor(s) for s in ([5, 6, 7], [8], [9, 10], [11, 12, 13, 14])]
    tokens, doc_ids = lu.pack_sequences(seqs, row_len=4, pad_value=0)
    assert doc_ids.tolist() == [[0, 0, 0, 1], [2, 2, -1, -1], [3, 3, 3, 3]]
    assert tokens.tolist() == [[5, 6, 7, 8], [9, 10, 0, 0], [11, 12, 13, 14]]
    assert lu.document_positions(doc_ids).tolist() == [
        [0, 1, 2, 0],
        [0, 1, 0, 0],
        [0, 1, 2, 3],
    ]


@pytest.mark.parametrize(
    "seqs, row_len, error, match",
    [
        (
            [torch.tensor([1, 2, 3])],
            2,
            ValueError,
            r"lengths in \[1, row_len=2\], got 3",
        ),
        ([torch.tensor([], dtype=torch.long)], 2, ValueError, "got 0 at index 0"),
        ([torch.tensor([1.0])], 2, TypeError, "1-D long tensors, got torch.float32"),
        ([[1, 2]], 2, TypeError, r"1-D long tensors, got \[1, 2\]"),
        ([], 2, ValueError, "at least one sequence"),
        ([torch.tensor([1])], 0, ValueError, "row_len >= 1, got 0"),
    ],
)
def test_pack_sequences_refuses_bad_input(seqs, row_len, error, match):
    with pytest.raises(error, match=match):
        lu.pack_sequences(seqs, row_len)


def test_document_mask_keeps_attention_inside_documents_and_pads_to_themselves():
    doc_ids = torch.tensor([[0, 0, 1, -1]])
    mask = lu.attention_mask(doc_ids < 0, 4, causal=False, doc_ids=doc_ids)[0, 0]
    assert mask.tolist() == [
        [True, True, False, False],
        [True, True, False, False],
        [False, False, True, False],
        [False, False, False, True],
    ]
    causal = lu.attention_mask(None, 4, causal=True, doc_ids=doc_ids)[0, 0]
    assert causal.tolist()[1] == [True, True, False, False]
    assert causal.tolist()[2] == [False, False, True, False]


@pytest.mark.parametrize(
    "doc_ids, error, match",
    [
        ([[0, 0, 1]], TypeError, "doc_ids to be a torch.Tensor, got list"),
        (torch.tensor([[0.0, 1.0]]), TypeError, "integer doc_ids, got dtype"),
        (torch.tensor([0, 0, 1]), ValueError, r"shape \(B, T\), got shape \(3,\)"),
    ],
)
def test_document_positions_refuses_bad_input(doc_ids, error, match):
    with pytest.raises(error, match=match):
        lu.document_positions(doc_ids)


def test_attention_mask_refuses_masks_of_another_length():
    doc_ids = torch.tensor([[0, 0, 1]])
    with pytest.raises(ValueError, match=r"doc_ids of shape \(B, T=4\), got"):
        lu.attention_mask(None, 4, causal=True, doc_ids=doc_ids)
    with pytest.raises(ValueError, match=r"padding_mask of shape \(B, T=4\), got"):
        lu.attention_mask(doc_ids < 0, 4, causal=True)


def test_attention_mask_refuses_a_padding_mask_of_another_shape_than_doc_ids():
    docs = torch.tensor([[0, 0, 1, -1], [2, 2, 2, 2]])
    with pytest.raises(ValueError, match="doc_ids' shape"):
        lu.attention_mask(torch.zeros(3, 4, dtype=torch.bool), 4, True, docs)
