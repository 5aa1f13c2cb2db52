import copy

import pytest
import torch

import lnbn_utils as lu

KINDS = ["layer", "batch", "masked_batch", "rms", "none"]


def tiny(**kw):
    base = dict(vocab_size=11, block_size=12, n_layer=2, n_head=2, n_embd=16)
    base.update(kw)
    return lu.TinyTransformer(lu.TransformerConfig(**base))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("position", ["pre", "post"])
def test_lm_forward_and_backward(kind, position):
    torch.manual_seed(0)
    model = tiny(norm=kind, norm_position=position)
    idx = torch.randint(11, (3, 10))
    logits = model(idx)
    assert logits.shape == (3, 10, 11)
    lu.lm_loss(model, (idx, idx)).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_lm_is_causal_with_layernorm():
    torch.manual_seed(0)
    model = tiny(norm="layer").eval()
    idx = torch.randint(11, (2, 10))
    changed = idx.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 11
    torch.testing.assert_close(model(idx)[:, :6], model(changed)[:, :6])


def test_classifier_ignores_padding_with_layernorm_and_masked_bn():
    task = lu.VariableLengthTask(vocab_size=11, min_len=3, max_len=6)
    tokens, mask, _ = task.batch(4, torch.Generator().manual_seed(0))
    longer, longer_mask = (
        torch.nn.functional.pad(t, (0, 5), value=v)
        for t, v in ((tokens, 0), (mask, True))
    )
    for kind in ["layer", "masked_batch"]:
        torch.manual_seed(0)
        model = tiny(norm=kind, causal=False, n_classes=2)
        model.train()
        torch.testing.assert_close(model(tokens, mask), model(longer, longer_mask))
        assert model(tokens, mask).shape == (4, 2)


def test_config_is_frozen_and_validated():
    cfg = lu.TransformerConfig()
    with pytest.raises(Exception):
        cfg.n_layer = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="norm_position"):
        lu.TransformerConfig(norm_position="middle")
    with pytest.raises(ValueError, match="divisible"):
        lu.TransformerConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="unknown norm kind"):
        tiny(norm="group")


def test_model_rejects_bad_input():
    model = tiny()
    with pytest.raises(ValueError, match=r"expected token ids of shape \(B, T\)"):
        model(torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="block_size=12"):
        model(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match=r"in \[0, 11\)"):
        model(torch.full((1, 3), 11))
    with pytest.raises(ValueError, match="bool padding_mask"):
        model(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="all-padding row"):
        model(
            torch.zeros(2, 3, dtype=torch.long), torch.tensor([[False] * 3, [True] * 3])
        )


@pytest.mark.parametrize(
    "idx, mask, match",
    [
        ([[1, 2, 3]], None, "idx to be a torch.Tensor, got list"),
        ((1, 2, 3), None, "idx to be a torch.Tensor, got tuple"),
        (
            torch.zeros(1, 3, dtype=torch.long),
            [[False] * 3],
            "padding_mask to be a torch.Tensor, got list",
        ),
    ],
)
def test_model_given_python_containers_is_a_type_error(idx, mask, match):
    with pytest.raises(TypeError, match=match):
        tiny()(idx, mask)


@pytest.mark.parametrize("kind", KINDS)
def test_model_protocols_after_training(kind):
    """state_dict round trip, deepcopy, pickle, float64 and repr of a trained model."""
    import copy
    import pickle

    model = tiny(norm=kind)
    x = torch.randint(11, (4, 6), generator=torch.Generator().manual_seed(0))
    mask = lu.lengths_to_padding_mask([6, 4, 5, 2], 6)
    model(x, mask).sum().backward()  # a training forward updated BN buffers
    twin = tiny(norm=kind)
    twin.load_state_dict(model.state_dict())
    for other in (twin, copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        for training in (True, False):
            a = copy.deepcopy(model).train(training)(x, mask)
            torch.testing.assert_close(copy.deepcopy(other).train(training)(x, mask), a)
    as64 = copy.deepcopy(model).double().eval()
    ref = copy.deepcopy(model).eval()(x, mask)
    torch.testing.assert_close(as64(x, mask).float(), ref)
    assert "TinyTransformer" in repr(model)


def test_rotary_preserves_norms_and_depends_only_on_offsets():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)
    T = 7
    rq = lu.apply_rotary(q.expand(1, 1, T, 8))  # the same query at every position
    rk = lu.apply_rotary(k.expand(1, 1, T, 8))
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1).expand(1, 1, T))
    scores = (rq[0, 0] @ rk[0, 0].T).double()  # (T, T): q_t . k_s
    for offset in range(-3, 4):  # constant along each diagonal t - s = offset
        diag = scores.diagonal(offset)
        torch.testing.assert_close(diag, diag[:1].expand_as(diag), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lu.apply_rotary(q), q)  # position 0: no rotation
    with pytest.raises(ValueError, match="even head size"):
        lu.apply_rotary(torch.randn(1, 1, 3, 5))


@pytest.mark.parametrize("position", ["none", "rotary"])
def test_position_options_without_embedding(position):
    """No position embedding is added; a classifier without positions ignores order."""
    torch.manual_seed(0)
    model = tiny(position=position, causal=False, n_classes=2).eval()
    idx = torch.randint(11, (2, 9))
    perm = torch.randperm(9)
    moved = (model(idx) - model(idx[:, perm])).abs().max().item()
    if position == "none":  # permutation-invariant: mean pooling of an equivariant map
        assert moved < 1e-5, moved
    else:  # rotary positions make order matter
        assert moved > 1e-6, moved
    assert model.pos_emb is None  # no table that nothing would train


def test_rotary_lm_is_causal_and_rejects_odd_heads():
    torch.manual_seed(0)
    model = tiny(position="rotary").eval()
    idx = torch.randint(11, (2, 10))
    changed = idx.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 11
    torch.testing.assert_close(model(idx)[:, :6], model(changed)[:, :6])
    with pytest.raises(ValueError, match="even head size"):
        lu.TransformerConfig(n_embd=6, n_head=2, position="rotary")
    with pytest.raises(ValueError, match="expected position in"):
        lu.TransformerConfig(position="sinusoidal")


def packed_docs(n_docs=7, row_len=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 7, (n_docs,), generator=g).tolist()
    docs = [torch.randint(1, 11, (n,), generator=g) for n in lengths]
    return docs, *lu.pack_sequences(docs, row_len)


@pytest.mark.parametrize("position", ["learned", "rotary", "none"])
@pytest.mark.parametrize("kind", ["layer", "masked_batch"])
def test_packed_documents_get_the_outputs_they_get_alone(kind, position):
    """Check: document mask + restarted positions = each document on its own."""
    docs, tokens, doc_ids = packed_docs()
    torch.manual_seed(0)
    # legacy N(0, 1) init: attention far from uniform, so cross-document mixing shows
    clf = tiny(norm=kind, position=position, causal=False, n_classes=3, init="legacy")
    clf.eval()
    alone = torch.cat([clf(d[None]) for d in docs])  # (D, 3)
    torch.testing.assert_close(clf(tokens, doc_ids=doc_ids), alone)
    torch.manual_seed(0)
    lm = tiny(norm=kind, position=position).eval()
    packed = lm(tokens, doc_ids=doc_ids)[doc_ids >= 0]  # (N, V) in document order
    torch.testing.assert_close(packed, torch.cat([lm(d[None])[0] for d in docs]))
    naive = clf(tokens, doc_ids=doc_ids, cross_document=True)
    assert naive.shape == alone.shape and (naive - alone).abs().max() > 1e-2


def test_packed_masked_bn_in_train_mode_equals_the_padded_batch_of_its_documents():
    """Check: without pads in its statistics, packing is padding for masked BN."""
    docs, tokens, doc_ids = packed_docs()
    torch.manual_seed(0)
    clf = tiny(norm="masked_batch", causal=False, n_classes=3).train()
    padded, mask = lu.pad_sequences(docs)
    torch.testing.assert_close(clf(tokens, doc_ids=doc_ids), clf(padded, mask))


def test_packed_forward_refuses_bad_doc_ids():
    docs, tokens, doc_ids = packed_docs()
    model = tiny(causal=False, n_classes=2)
    split = doc_ids.clone()
    split[0, 1] = 5  # document 5 appears in two runs
    bad = [
        (doc_ids.float(), ValueError, "long doc_ids of shape"),
        (doc_ids[:, :-1], ValueError, "long doc_ids of shape"),
        (doc_ids.tolist(), TypeError, "doc_ids to be a torch.Tensor"),
        (doc_ids - 2, ValueError, "-1 at padding"),
        (split, ValueError, "one contiguous run"),
    ]
    for ids, error, match in bad:
        with pytest.raises(error, match=match):
            model(tokens, doc_ids=ids)
    with pytest.raises(ValueError, match="padding_mask to equal doc_ids < 0"):
        model(tokens, torch.zeros_like(tokens, dtype=torch.bool), doc_ids=doc_ids)
    with pytest.raises(ValueError, match="doc_ids with cross_document=True"):
        model(tokens, cross_document=True)
    with pytest.raises(TypeError, match="cross_document to be a bool"):
        model(tokens, doc_ids=doc_ids, cross_document="no")


@pytest.mark.parametrize("position", ["learned", "rotary", "none"])
@pytest.mark.parametrize("causal", [True, False])
def test_packed_edge_cases_one_token_documents_full_rows_and_pads_between(
    position, causal
):
    """Check: one-token documents, a document filling its row, pads between two."""
    docs = [torch.tensor(d) for d in ([3], [4, 5, 6], [7], [1, 2, 3, 4, 5, 6], [8])]
    tokens = torch.tensor([[3, 0, 0, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 0], [8] * 7])
    doc_ids = torch.tensor(
        [[0, -1, -1, 1, 1, 1, 2], [3, 3, 3, 3, 3, 3, -1], [4, -1, -1, -1, -1, -1, -1]]
    )
    tokens[2, 1:] = 0
    torch.manual_seed(0)
    model = tiny(position=position, causal=causal, init="legacy").eval()
    packed = model(tokens, doc_ids=doc_ids)[doc_ids >= 0]  # (N, V) in document order
    torch.testing.assert_close(packed, torch.cat([model(d[None])[0] for d in docs]))


def test_rotary_positions_argument_defaults_to_arange():
    x = torch.randn(2, 3, 5, 8)
    pos = torch.arange(5).expand(2, 5)
    assert torch.equal(lu.apply_rotary(x, positions=pos), lu.apply_rotary(x))


@pytest.mark.parametrize("position", ["learned", "rotary", "none"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_models_run_in_half_precision_for_every_position(position, dtype):
    torch.manual_seed(0)
    model = tiny(position=position).eval()
    idx = torch.randint(11, (2, 9))
    ref = model(idx)
    half = copy.deepcopy(model).to(dtype)
    out = half(idx)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)
    q = torch.randn(2, 2, 9, 8).to(dtype)
    assert lu.apply_rotary(q).dtype == dtype


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n_classes": 0}, ValueError, "n_classes"),
        ({"n_classes": -2}, ValueError, "n_classes"),
        ({"n_classes": 2.0}, TypeError, "n_classes"),
        ({"n_head": 0}, ValueError, "n_head >= 1"),
        ({"n_head": 2.0}, TypeError, "n_head to be an int"),
        ({"n_embd": True}, TypeError, "n_embd to be an int"),
        ({"vocab_size": 0}, ValueError, "vocab_size >= 1"),
        ({"causal": 1}, TypeError, "causal to be a bool"),
    ],
)
def test_config_refuses_sizes_that_are_not_positive_ints(kwargs, error, match):
    with pytest.raises(error, match=match):
        lu.TransformerConfig(**kwargs)


@pytest.mark.parametrize("position", ["rotary", "none"])
def test_no_position_table_without_learned_positions(position):
    """Nothing unused is built; every other weight is what a learned model gets."""
    torch.manual_seed(3)
    model = tiny(position=position)
    torch.manual_seed(3)
    learned = tiny(position="learned")
    assert model.pos_emb is None
    state, ref = model.state_dict(), learned.state_dict()
    assert set(ref) - set(state) == {"pos_emb.weight"}
    assert all(torch.equal(state[k], ref[k]) for k in state)
    model(torch.randint(11, (2, 9))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP-safe
    model.load_state_dict(ref)  # a stored table is ignored, strictly
    assert lu.TransformerConfig.__doc__.startswith("Shape and design choices")


def test_language_model_takes_packed_rows_with_any_document_ids():
    torch.manual_seed(0)
    model = tiny().eval()
    idx = torch.randint(1, 11, (2, 6))
    docs = torch.tensor([[0, 0, 1, 1, 1, -1], [2, 2, 2, 3, -1, -1]])
    shifted = torch.where(docs >= 0, docs + 7, -1)  # rows 2..3 of a larger batch
    torch.testing.assert_close(model(idx, doc_ids=shifted), model(idx, doc_ids=docs))
    classifier = tiny(n_classes=2, causal=False)
    with pytest.raises(ValueError, match="each document 0..D-1"):
        classifier(idx, doc_ids=shifted)
    split = torch.tensor([[0, 0, 1, 0, -1, -1], [2, 2, 2, 3, -1, -1]])
    with pytest.raises(ValueError, match="one contiguous run"):
        model(idx, doc_ids=split)


@pytest.mark.parametrize(
    "positions, error",
    [
        (torch.arange(5), ValueError),  # (T,) instead of (B, T)
        (torch.zeros(2, 4, dtype=torch.long), ValueError),  # wrong T
        (torch.zeros(3, 5, dtype=torch.long), ValueError),  # wrong B
        (torch.zeros(2, 5, dtype=torch.bool), TypeError),
        ([[0, 1, 2, 3, 4]] * 2, TypeError),
    ],
)
def test_apply_rotary_refuses_positions_that_do_not_fit(positions, error):
    with pytest.raises(error, match="positions"):
        lu.apply_rotary(torch.randn(2, 2, 5, 4), positions=positions)
