"""lnbn_utils.norms: every norm kind, its dtype policy, its validation and protocols."""

import copy
import math
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import lnbn_utils as lu
from lnbn_utils.norms import check_norm_input, normalize, update_running_stats

C = 8
KINDS = ["layer", "batch", "masked_batch", "rms", "none"]


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", KINDS)
def test_make_norm_shape_and_signature(kind):
    norm = lu.make_norm(kind, C)
    x = randn(3, 5, C)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    assert norm(x).shape == x.shape
    assert norm(x, padding_mask=mask).shape == x.shape


def test_layernorm_matches_pytorch():
    x = randn(4, 6, C)
    ours, ref = lu.LayerNorm(C), nn.LayerNorm(C)
    torch.testing.assert_close(ours(x), ref(x))


def test_rmsnorm_matches_pytorch():
    x = randn(4, 6, C)
    torch.testing.assert_close(lu.RMSNorm(C, eps=1e-6)(x), nn.RMSNorm(C, eps=1e-6)(x))


def test_token_batchnorm_matches_batchnorm1d_including_running_stats():
    torch.manual_seed(0)
    ours, ref = lu.TokenBatchNorm(C), nn.BatchNorm1d(C)
    for step in range(3):
        x = randn(4, 6, C, seed=step) * 3 + 1
        # nn.BatchNorm1d wants channels second: (B, T, C) -> (B, C, T)
        torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    x = randn(2, 3, C, seed=9)
    torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2))


def test_masked_batchnorm_without_mask_equals_token_batchnorm():
    masked, token = lu.MaskedBatchNorm(C), lu.TokenBatchNorm(C)
    for step in range(3):
        x = randn(4, 6, C, seed=step) * 2 - 1
        torch.testing.assert_close(masked(x), token(x))
    torch.testing.assert_close(masked.running_mean, token.running_mean)
    torch.testing.assert_close(masked.running_var, token.running_var)
    masked.eval(), token.eval()
    x = randn(2, 3, C, seed=7)
    torch.testing.assert_close(masked(x), token(x))


def test_masked_batchnorm_equals_batchnorm_on_real_tokens_only():
    x = randn(3, 7, C)
    lengths = torch.tensor([7, 2, 4])
    mask = lu.lengths_to_padding_mask(lengths, 7)
    masked, ref = lu.MaskedBatchNorm(C), nn.BatchNorm1d(C)
    y = masked(x, mask)
    real = x[~mask]  # (N, C): only the real tokens
    torch.testing.assert_close(y[~mask], ref(real))
    torch.testing.assert_close(masked.running_mean, ref.running_mean)
    torch.testing.assert_close(masked.running_var, ref.running_var)


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    extra=st.integers(0, 10),
    pad_value=st.sampled_from([0.0, -3.0, 1e4, float("inf"), float("nan")]),
)
def test_masked_batchnorm_real_outputs_invariant_to_padding(lengths, extra, pad_value):
    if sum(lengths) < 2:
        return
    seqs = [randn(n, C, seed=i) for i, n in enumerate(lengths)]
    short, short_mask = lu.pad_sequences(seqs)
    long, long_mask = lu.pad_sequences(
        seqs, T=max(lengths) + extra, pad_value=pad_value
    )
    norm = lu.MaskedBatchNorm(C)
    y_short, y_long = norm(short, short_mask), norm(long, long_mask)
    torch.testing.assert_close(
        y_long[:, : short.shape[1]][~short_mask], y_short[~short_mask]
    )


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 5), T=st.integers(1, 6), seed=st.integers(0, 1000))
def test_layernorm_output_for_one_example_is_independent_of_the_batch(B, T, seed):
    norm = lu.LayerNorm(C)
    x = randn(B, T, C, seed=seed)
    others = randn(B, T, C, seed=seed + 1)
    others[0] = x[0]
    assert torch.equal(norm(x)[0], norm(others)[0])
    assert torch.equal(norm(x)[0], norm(x[:1])[0])


def test_token_batchnorm_output_depends_on_the_batch():
    norm = lu.TokenBatchNorm(C)
    x = randn(4, 5, C)
    others = randn(4, 5, C, seed=1)
    others[0] = x[0]
    assert (norm(x)[0] - norm(others)[0]).abs().max() > 1e-2


def test_masked_batchnorm_gradients_ignore_pads():
    x = randn(2, 5, C).requires_grad_()
    mask = lu.lengths_to_padding_mask([5, 2], 5)
    y = lu.MaskedBatchNorm(C)(x, mask)
    y[~mask].sum().backward()
    assert torch.all(x.grad[mask] == 0)


@pytest.mark.parametrize("kind", sorted(lu.NORM_KINDS))  # every registered kind
@pytest.mark.parametrize(
    "x, mask, error, match",
    [
        (
            torch.zeros(4, C),
            None,
            ValueError,
            r"expected x of shape \(B, T, C\), got shape \(4, 8\)",
        ),
        (torch.zeros(2, 3, C + 1), None, ValueError, r"expected x with C=8"),
        ([[0.0] * C], None, TypeError, "expected x to be a torch.Tensor, got list"),
        (
            torch.zeros(2, 3, C, dtype=torch.long),
            None,
            TypeError,
            "floating-point x, got dtype torch.int64",
        ),
        (
            torch.zeros(2, 3, C),
            torch.zeros(2, 3),
            TypeError,
            "dtype torch.bool .*got torch.float32",
        ),
        (
            torch.zeros(2, 3, C),
            [[False] * 3] * 2,
            TypeError,
            "bool torch.Tensor .*got list",
        ),
        (
            torch.zeros(2, 3, C),
            torch.zeros(3, 2, dtype=torch.bool),
            ValueError,
            r"shape \(B, T\) = \(2, 3\), got shape \(3, 2\)",
        ),
    ],
)
def test_bad_input_raises(kind, x, mask, error, match):
    with pytest.raises(error, match=match):
        lu.make_norm(kind, C)(x, padding_mask=mask)


@pytest.mark.parametrize("kind", ["batch", "masked_batch"])
def test_batch_norms_refuse_fewer_than_two_real_tokens_in_training(kind):
    norm = lu.make_norm(kind, C)
    with pytest.raises(ValueError, match="at least 2 real"):
        norm(torch.randn(1, 1, C))
    norm.eval()
    assert torch.isfinite(
        norm(torch.randn(1, 1, C))
    ).all()  # eval mode uses running stats


def test_masked_batchnorm_refuses_all_padding_batch():
    mask = torch.tensor([[False, True, True], [True, True, True]])
    with pytest.raises(ValueError, match="got 1"):
        lu.MaskedBatchNorm(C)(torch.randn(2, 3, C), mask)


def test_make_norm_rejects_unknown_kind_and_bad_width():
    with pytest.raises(ValueError, match="unknown norm kind 'group'"):
        lu.make_norm("group", C)
    with pytest.raises(ValueError, match="positive int"):
        lu.make_norm("layer", 0)


def test_register_norm_adds_a_kind():
    lu.register_norm("test_identity", lu.NoNorm)
    try:
        assert isinstance(lu.make_norm("test_identity", C), lu.NoNorm)
    finally:
        del lu.NORM_KINDS["test_identity"]


# --- the dtype policy ---------------------------------------------------------------
# x must be floating point, of the norm's parameter dtype, or float16/bfloat16 with
# float32 parameters (statistics in float32, output in x's dtype, buffers float32), as
# nn.LayerNorm / nn.BatchNorm1d do on the CPU. NoNorm has no parameters: any float.
# Checked for EVERY kind make_norm can build (importing lnbn_utils registers them all:
# the repaired norms, the group BNs of charlm_experiment), in both modes, with and
# without a padding mask (every kind takes one; some only validate it).

ALL_KINDS = sorted(lu.NORM_KINDS)
PARAM_KINDS = [k for k in ALL_KINDS if k != "none"]  # "none" has no parameters
REDUCED = [torch.bfloat16, torch.float16]
# Unit roundoff u of the output dtype (half an ulp at 1). Measured on N(1, 4) input,
# B=4, T=6, C=8, every kind, both modes, both masks (torch 2.13 CPU):
# * against the float32 norm fed the same rounded input, max |y - y32| / (|y32| + 1)
#   was 0.76 u (bf16) and 0.77 u (fp16): only the final rounding of the output;
# * against the float32 norm fed the unrounded float32 input, 3.8 u (bf16) and 2.3 u
#   (fp16), worst for position_batch (B=4 tokens per statistic); 1.5 u otherwise.
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
KIND_ARGS = {"power": {"warmup_steps": 1}}  # so its second step uses running stats


def masks_for(B, T):
    return [
        None,
        lu.lengths_to_padding_mask(torch.arange(T, T - B, -1).clamp(min=1), T),
    ]


def norm_triplet(kind, dtype, mask):
    """Three copies of one float32 norm with non-trivial parameters, after one
    training step on the same input (exactly representable in ``dtype``)."""
    torch.manual_seed(0)
    norm = lu.make_norm(kind, C, **KIND_ARGS.get(kind, {}))
    with torch.no_grad():
        for i, p in enumerate(norm.parameters()):
            g = torch.Generator().manual_seed(30 + i)
            p.add_(torch.randn(p.shape, generator=g) * 0.2)  # DyT's alpha: shape ()
    x0 = (randn(4, 6, C, seed=11) * 2 + 1).to(dtype)
    norm(x0, mask)  # the reduced-precision copy's first step
    ref, ref32 = copy.deepcopy(norm), copy.deepcopy(norm)
    return norm, ref, ref32


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("dtype", REDUCED)
@pytest.mark.parametrize("training", [True, False])
def test_reduced_precision_input_to_float32_norm(kind, dtype, training):
    u = UNIT_ROUNDOFF[dtype]
    for mask in masks_for(4, 6):
        norm, ref, ref32 = (n.train(training) for n in norm_triplet(kind, dtype, mask))
        buffer_dtypes = [b.dtype for b in norm.buffers()]
        x = randn(4, 6, C) * 2 + 1
        xr = x.to(dtype).requires_grad_()
        y = norm(xr, mask)
        assert y.dtype == dtype, (kind, y.dtype)
        assert torch.isfinite(y).all(), kind
        # the float32 norm on the same rounded input: output rounding only
        y_same = ref(xr.detach().float(), mask)
        torch.testing.assert_close(y.float(), y_same, rtol=u, atol=u)
        # the float32 norm on the float32 input: input and output rounding
        torch.testing.assert_close(y.float(), ref32(x, mask), rtol=8 * u, atol=8 * u)
        for (name, b), b_ref in zip(norm.named_buffers(), ref.buffers()):
            assert b.dtype == b_ref.dtype and b.dtype != dtype, (kind, name, b.dtype)
            torch.testing.assert_close(b, b_ref, msg=f"{kind} {name}")
        (y.float() * randn(4, 6, C, seed=5)).sum().backward()  # PowerNorm: nu update
        assert xr.grad.dtype == dtype and torch.isfinite(xr.grad).all(), kind
        assert [b.dtype for b in norm.buffers()] == buffer_dtypes, kind


def _dtype_error(param, got):
    return (
        rf"expected x of dtype {param} \(the norm's parameters\), or float16/bfloat16 "
        rf"with float32 parameters, got {got}; convert the norm with \.to\({got}\) "
        rf"or the input with \.to\({param}\)"
    )


@pytest.mark.parametrize("kind", PARAM_KINDS)
@pytest.mark.parametrize("training", [True, False])
def test_wider_or_narrower_input_than_the_parameters_is_a_type_error(kind, training):
    for mask in masks_for(2, 3):
        norm = lu.make_norm(kind, C).train(training)
        state = copy.deepcopy(norm.state_dict())
        with pytest.raises(
            TypeError, match=_dtype_error("torch.float32", "torch.float64")
        ):
            norm(randn(2, 3, C).double(), mask)
        for k, v in norm.state_dict().items():  # refused before any state changed
            assert torch.equal(v, state[k]), (kind, k)
        norm64 = lu.make_norm(kind, C).double().train(training)
        with pytest.raises(
            TypeError, match=_dtype_error("torch.float64", "torch.float32")
        ):
            norm64(randn(2, 3, C), mask)
        bf16 = lu.make_norm(kind, C).to(torch.bfloat16).train(training)
        with pytest.raises(
            TypeError, match=_dtype_error("torch.bfloat16", "torch.float16")
        ):
            bf16(randn(2, 3, C).half(), mask)


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "dtype", [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64]
)
def test_non_floating_input_is_a_type_error(kind, training, dtype):
    for mask in masks_for(2, 3):
        norm = lu.make_norm(kind, C).train(training)
        x = torch.ones(2, 3, C, dtype=dtype)
        with pytest.raises(
            TypeError, match=f"expected a floating-point x, got dtype {dtype}"
        ):
            norm(x, mask)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_float64_norm_matches_float32_norm(kind):
    x = randn(4, 6, C) * 3 - 1  # B * T a multiple of ghost_batch's group of 8
    for mask in masks_for(4, 6):
        n32 = lu.make_norm(kind, C)
        n64 = copy.deepcopy(n32).to(torch.float64)
        y64 = n64(x.double(), mask)
        assert y64.dtype == torch.float64
        torch.testing.assert_close(y64.float(), n32(x, mask))
        for b32, b64 in zip(n32.buffers(), n64.buffers()):
            torch.testing.assert_close(b64.to(b32.dtype), b32)


def test_no_norm_passes_any_float_dtype_through():
    x = randn(2, 3, C).double()
    assert lu.NoNorm(C)(x) is x


# --- hyperparameters ----------------------------------------------------------------

EPS_KINDS = [k for k in ALL_KINDS if k not in ("dyt", "none")]  # those with an eps
MOMENTUM_KINDS = [
    "batch", "ghost_batch", "masked_batch", "position_batch", "rbn", "renorm",
]  # fmt: skip


@pytest.mark.parametrize("kind", EPS_KINDS)
@pytest.mark.parametrize(
    "eps, error",
    [
        (-1e-5, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("1e-5", TypeError),
    ],
)
def test_bad_eps_is_refused(kind, eps, error):
    with pytest.raises(error, match="eps"):
        lu.make_norm(kind, C, eps=eps)


@pytest.mark.parametrize("kind", MOMENTUM_KINDS)
@pytest.mark.parametrize(
    "momentum, error",
    [
        (-0.1, ValueError),
        (1.5, ValueError),
        (float("nan"), ValueError),
        ("0.1", TypeError),
        (True, TypeError),
    ],
)
def test_bad_momentum_is_refused(kind, momentum, error):
    with pytest.raises(error, match="momentum"):
        lu.make_norm(kind, C, momentum=momentum)


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize(
    "width, error",
    [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError)],
)
def test_bad_width_is_refused_by_every_constructor(kind, width, error):
    with pytest.raises(error, match="num_features"):
        type(lu.make_norm(kind, C))(width)


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("cls", [lu.MaskedBatchNorm, lu.TokenBatchNorm])
def test_momentum_none_is_the_cumulative_average_like_batchnorm1d(cls, use_mask):
    norm, ref = cls(C, momentum=None), nn.BatchNorm1d(C, momentum=None)
    for step in range(4):
        x = randn(3, 5, C, seed=step) * (step + 1) + step
        mask = (
            lu.lengths_to_padding_mask([5, 3, 4], 5)
            if use_mask and cls is lu.MaskedBatchNorm
            else None
        )
        norm(x, mask)
        real = x[~mask] if mask is not None else x.reshape(-1, C)
        ref(real)  # nn.BatchNorm1d on the (N, C) real tokens
    torch.testing.assert_close(norm.running_mean, ref.running_mean)
    torch.testing.assert_close(norm.running_var, ref.running_var)
    assert int(norm.num_batches_tracked) == 4


def test_group_bns_have_no_cumulative_average():
    for kind in ("ghost_batch", "position_batch"):
        with pytest.raises(TypeError, match="expected momentum to be a float.*None"):
            lu.make_norm(kind, C, momentum=None)


def test_momentum_zero_and_one():
    x = randn(3, 5, C) + 2
    frozen, last = (
        lu.MaskedBatchNorm(C, momentum=0.0),
        lu.MaskedBatchNorm(C, momentum=1.0),
    )
    mask = lu.lengths_to_padding_mask([5, 2, 4], 5)
    frozen(x, mask), last(x, mask)
    assert torch.equal(frozen.running_mean, torch.zeros(C))
    mean, var, n = lu.MaskedBatchNorm.batch_stats(x, mask)
    torch.testing.assert_close(last.running_mean, mean)
    torch.testing.assert_close(last.running_var, var * n / (n - 1))


# --- the masked autograd function ---------------------------------------------------


def masked_reference(x, mask, weight, bias, eps=1e-5):
    """Masked BN in plain autograd ops: BN over the real tokens; pad outputs are the
    bias (pads take no part: no value in, no gradient to x or the weight; the bias
    gets the gradient of every output that equals it)."""
    real = x[~mask]  # (N, C)
    mean, var = real.mean(0), real.var(0, unbiased=False)
    y = (x - mean) * torch.rsqrt(var + eps) * weight + bias
    return torch.where(mask.unsqueeze(-1), bias.expand_as(y), y)


@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 7), min_size=1, max_size=4),
    T=st.integers(1, 7),
    seed=st.integers(0, 100),
    scale=st.sampled_from([0.1, 1.0, 30.0]),
)
def test_masked_autograd_function_matches_plain_autograd(lengths, T, seed, scale):
    """Exact in float64 (to rounding); float32 within float32 rounding of it."""
    lengths = torch.tensor(lengths).clamp(max=T)
    if int(lengths.sum()) < 2:
        return
    mask = lu.lengths_to_padding_mask(lengths, T)
    x = randn(len(lengths), T, C, seed=seed).double() * scale + 3
    g = randn(len(lengths), T, C, seed=seed + 3).double()
    w, b = randn(C, seed=seed + 1).double() + 1, randn(C, seed=seed + 2).double()

    def run(dtype, fn):
        xs, ws, bs = (t.detach().clone().to(dtype).requires_grad_() for t in (x, w, b))
        y = fn(xs, ws, bs)
        (y * g.to(dtype)).sum().backward()
        return [t.detach().double() for t in (y, xs.grad, ws.grad, bs.grad)]

    def reference(xs, ws, bs):
        return masked_reference(xs, mask, ws, bs)

    ref64 = run(torch.float64, reference)
    # float32 error grows as |mean| / std = 3 / scale (cancellation in x - mean)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 2e-3 + 1e-3 / scale)):
        xs = x.detach().clone().to(dtype).requires_grad_()
        norm = lu.MaskedBatchNorm(C).to(dtype)
        with torch.no_grad():
            norm.weight.copy_(w), norm.bias.copy_(b)
        y = norm(xs, mask)
        (y * g.to(dtype)).sum().backward()
        got = [
            t.detach().double() for t in (y, xs.grad, norm.weight.grad, norm.bias.grad)
        ]
        for name, a, r in zip(("y", "dx", "dweight", "dbias"), got, ref64):
            scale_r = r.abs().max().clamp(min=1.0)
            err = float((a - r).abs().max().detach() / scale_r)
            assert err < tol, (dtype, name, err)


def test_masked_gradients_equal_naive_formula_when_the_loss_ignores_pads():
    """The earlier plain-op MaskedBatchNorm: same gradients for a real-token loss."""
    x = randn(3, 6, C).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    mask = lu.lengths_to_padding_mask([6, 2, 4], 6)
    norm = lu.MaskedBatchNorm(C)
    g = randn(3, 6, C, seed=5).masked_fill(mask.unsqueeze(-1), 0.0)
    (norm(x, mask) * g).sum().backward()
    mean, var, _ = lu.MaskedBatchNorm.batch_stats(x2, mask)
    naive = (x2 - mean) * torch.rsqrt(var + 1e-5)
    (naive * g).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_function_passes_gradcheck(dtype):
    x = randn(2, 4, 3, seed=1).to(dtype).requires_grad_()
    mask = lu.lengths_to_padding_mask([4, 2], 4)
    norm = lu.MaskedBatchNorm(3).to(dtype)
    # a loss on real tokens only: gradcheck compares with finite differences of it
    f = lambda t: norm(t, mask).masked_fill(mask.unsqueeze(-1), 0.0)  # noqa: E731
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(f, (x,))
    else:
        x64 = x.detach().double().requires_grad_()
        assert torch.autograd.gradcheck(
            lambda t: f(t.float()).double(), (x64,), atol=1e-2, eps=1e-3
        )


# --- padding invariance of everything a padded batch feeds into ----------------------

PAD_INVARIANT = ["layer", "masked_batch", "rms", "none"]


@pytest.mark.parametrize("kind", PAD_INVARIANT)
@settings(max_examples=15, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    extra=st.integers(0, 6),
    pad_value=st.sampled_from(
        [0.0, -3.0, 1e4, float("inf"), float("-inf"), float("nan")]
    ),
)
def test_real_outputs_gradients_and_running_stats_ignore_pads(
    kind, lengths, extra, pad_value
):
    seqs = [randn(n, C, seed=i) for i, n in enumerate(lengths)]
    short, short_mask = lu.pad_sequences(seqs)
    long, long_mask = lu.pad_sequences(
        seqs, T=max(lengths) + extra, pad_value=pad_value
    )
    g = randn(*short.shape, seed=9)
    results = []
    for x, mask in ((short, short_mask), (long, long_mask)):
        torch.manual_seed(0)
        norm = lu.make_norm(kind, C)
        x = x.clone().requires_grad_()
        y = norm(x, mask)
        real_y = y[:, : short.shape[1]][~short_mask]  # the real tokens, in order
        (real_y * g[~short_mask]).sum().backward()
        grads = [p.grad for p in norm.parameters()]
        results.append(
            (
                real_y,
                x.grad[:, : short.shape[1]][~short_mask],
                grads,
                list(norm.buffers()),
            )
        )
    (y1, gx1, gp1, b1), (y2, gx2, gp2, b2) = results
    torch.testing.assert_close(y2, y1)
    torch.testing.assert_close(gx2, gx1)
    if kind in ("layer", "rms") and not math.isfinite(pad_value):
        gp1, gp2 = [], []  # per-token kernels: 0 * inf = NaN in their weight gradient
    for a, b in zip(gp1 + b1, gp2 + b2):
        torch.testing.assert_close(b, a)


# --- ordinary-module protocols at every point of life ------------------------------


def life_stages(kind):
    """(name, norm) at each stage: fresh; after training steps; in eval mode."""
    mask = lu.lengths_to_padding_mask([5, 3, 4], 5)
    fresh = lu.make_norm(kind, C)
    trained = lu.make_norm(kind, C)
    opt = (
        torch.optim.SGD(trained.parameters(), lr=0.1)
        if list(trained.parameters())
        else None
    )
    for step in range(3):
        loss = trained(randn(3, 5, C, seed=step) * 2 + 1, mask).pow(2).mean()
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
    evaluated = pickle.loads(pickle.dumps(trained)).eval()
    return [("fresh", fresh), ("trained", trained), ("eval", evaluated)]


@pytest.mark.parametrize("kind", KINDS)
def test_module_protocols_at_every_stage(kind):
    mask = lu.lengths_to_padding_mask([5, 3, 4], 5)
    x = randn(3, 5, C, seed=42)
    for stage, norm in life_stages(kind):
        twins = {
            "deepcopy": copy.deepcopy(norm),
            "pickle": pickle.loads(pickle.dumps(norm)),
            "state_dict": lu.make_norm(kind, C).train(norm.training),
        }
        twins["state_dict"].load_state_dict(norm.state_dict())
        for how, twin in twins.items():
            for training in (False, True):
                a, b = (
                    copy.deepcopy(norm).train(training),
                    copy.deepcopy(twin).train(training),
                )
                torch.testing.assert_close(
                    b(x, mask), a(x, mask), msg=f"{stage} {how} {training}"
                )
        assert f"{C}" in repr(norm)
        as64 = copy.deepcopy(norm).to(torch.float64)
        torch.testing.assert_close(
            as64.eval()(x.double(), mask).float(), copy.deepcopy(norm).eval()(x, mask)
        )
        assert norm.train() is norm and norm.training and not norm.eval().training


# --- the BN-like contract and the helpers written once ------------------------------


def test_batch_stats_contract():
    for kind in ["batch", "masked_batch", "rbn", "renorm"]:
        assert isinstance(lu.make_norm(kind, C), lu.BatchStatsNorm), kind
    for kind in ["layer", "rms", "none", "dyt"]:
        assert not isinstance(lu.make_norm(kind, C), lu.BatchStatsNorm), kind
    x = randn(2, 5, C)
    mean, var, n = lu.TokenBatchNorm.batch_stats(
        x, lu.lengths_to_padding_mask([5, 1], 5)
    )
    flat = x.reshape(-1, C)  # TokenBatchNorm: pads count
    torch.testing.assert_close(mean, flat.mean(0))
    torch.testing.assert_close(var, flat.var(0, unbiased=False))
    assert int(n) == 10


def test_update_running_stats_and_normalize_match_batchnorm1d():
    ref = nn.BatchNorm1d(C)
    norm = lu.MaskedBatchNorm(C)
    x = randn(20, C) * 3 + 1
    y_ref = ref(x)
    mean, var = x.mean(0), x.var(0, unbiased=False)
    update_running_stats(norm, mean, var, torch.tensor(20))
    torch.testing.assert_close(norm.running_mean, ref.running_mean)
    torch.testing.assert_close(norm.running_var, ref.running_var)
    torch.testing.assert_close(
        normalize(x, mean, var, ref.weight, ref.bias, ref.eps), y_ref
    )


def test_input_validation_reads_no_data():
    """check_norm_input looks at metadata only: no kernel runs, so no device sync."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        ops: list = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func)
            return func(*args, **(kwargs or {}))

    x, mask = randn(2, 3, C), lu.lengths_to_padding_mask([3, 1], 3)
    with Record() as rec:
        check_norm_input(x, mask, C, torch.float32)
    assert rec.ops == []


@pytest.mark.parametrize("kind", ["batch", "masked_batch", "rbn", "renorm"])
def test_an_eval_output_can_be_differentiated_after_a_training_step(kind):
    """Running statistics updated in place must not break an earlier eval graph."""
    norm = lu.make_norm(kind, C)
    x = randn(3, 5, C).requires_grad_()
    mask = lu.lengths_to_padding_mask([5, 2, 4], 5)
    y_eval = norm.eval()(x, mask)
    norm.train()(x, mask)  # updates running_mean / running_var in place
    (grad,) = torch.autograd.grad(y_eval.sum(), x)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("pad_share", [0.0, 0.22, 0.5, 0.95])
@pytest.mark.parametrize("scale, shift", [(1.0, 0.0), (1e3, 1e4), (1e-3, 5.0)])
def test_masked_bn_is_exact_against_float64_at_any_pad_share_and_scale(
    pad_share, scale, shift
):
    g = torch.Generator().manual_seed(0)
    B, T = 8, 64
    mask = torch.rand(B, T, generator=g) < pad_share
    mask[:, 0] = False  # at least B real tokens
    x = torch.randn(B, T, C, generator=g) * scale + shift
    y = lu.MaskedBatchNorm(C)(x, mask).detach()
    real = x[~mask].double()  # the same float32 inputs, in float64
    ref = (real - real.mean(0)) / torch.sqrt(real.var(0, unbiased=False) + 1e-5)
    assert float((y[~mask].double() - ref).abs().max()) <= KERNEL_F32_ERR
    # the implementation: PyTorch's BN kernel on the real rows shifted by the first
    shifted = x[~mask] - x[~mask][:1]
    assert torch.equal(y[~mask], F.batch_norm(shifted, None, None, training=True))


def test_masked_bn_real_tokens_are_the_same_bits_with_or_without_pads():
    lengths = torch.tensor([5, 9, 2, 7])
    x = randn(4, 9, C) * 3 + 1
    x[lu.lengths_to_padding_mask(lengths, 9)] = float("nan")  # pads hold garbage
    mask = lu.lengths_to_padding_mask(lengths, 9)
    padded = lu.MaskedBatchNorm(C)(x, mask)[~mask]  # (n, C)
    packed = x[~mask].unsqueeze(0)  # (1, n, C): the same tokens, no pads
    alone = lu.MaskedBatchNorm(C)(packed).squeeze(0)
    no_pads = lu.MaskedBatchNorm(C)(
        packed, torch.zeros(1, len(alone), dtype=torch.bool)
    )
    assert torch.equal(padded, alone) and torch.equal(alone, no_pads.squeeze(0))


def test_masked_bn_gradients_pass_gradcheck_over_every_output_pads_included():
    mask = lu.lengths_to_padding_mask(torch.tensor([3, 1, 4]), 4)
    norm = lu.MaskedBatchNorm(5).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-1, 1)
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)

    def f(x, w, b):
        return torch.func.functional_call(norm, {"weight": w, "bias": b}, (x, mask))

    w = norm.weight.detach().clone().requires_grad_()
    b = norm.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (x, w, b))


def test_masked_bn_accepts_a_non_contiguous_mask():
    mask = lu.lengths_to_padding_mask(torch.tensor([3, 5, 2]), 6).t().contiguous().t()
    assert not mask.is_contiguous()
    x = randn(3, 6, C)
    torch.testing.assert_close(
        lu.MaskedBatchNorm(C)(x, mask), lu.MaskedBatchNorm(C)(x, mask.contiguous())
    )


# --- masked BN: exact against float64, bit-identical with or without pads -----------

# PyTorch's fused BN kernel accumulates its statistics in float32: on a few hundred
# tokens its output errs by up to about 3e-6 against float64 on one thread (about 1.5e-6
# on two), the same for nn.BatchNorm1d on those tokens. Masked BN runs that kernel.
KERNEL_F32_ERR = 5e-6


@pytest.mark.parametrize("pad_share", [0.0, 0.22, 0.5, 0.95])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_masked_batchnorm_exact_and_independent_of_pads(pad_share, scale):
    g = torch.Generator().manual_seed(0)
    B, T, C = 8, 40, 16
    x = (torch.randn(B, T, C, generator=g) + 3.0) * scale
    mask = torch.rand(B, T, generator=g) < pad_share
    mask[0, :2] = False  # at least 2 real tokens
    norm = lu.MaskedBatchNorm(C)
    y = norm(x.masked_fill(mask.unsqueeze(-1), float("nan")), mask)
    real = x[~mask].double()
    ref = (real - real.mean(0)) / torch.sqrt(real.var(0, unbiased=False) + 1e-5)
    assert float((y[~mask].double() - ref).abs().max()) <= KERNEL_F32_ERR
    alone = lu.MaskedBatchNorm(C)(x[~mask].unsqueeze(0))  # the real tokens, no pads
    assert torch.equal(alone[0], y[~mask])
    assert torch.equal(y[mask], norm.bias.detach().expand(int(mask.sum()), C))


def test_masked_batchnorm_gradcheck_float64_with_pads():
    mask = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1], [0, 1, 1, 1]], dtype=torch.bool)
    norm = lu.MaskedBatchNorm(5).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0), norm.bias.normal_()
    x = torch.randn(3, 4, 5, dtype=torch.double, requires_grad=True)

    def f(x, w, b):  # every output, pads included: their output is the bias
        params = {"weight": w, "bias": b}
        return torch.func.functional_call(norm, params, (x, mask))

    w, b = (p.detach().clone().requires_grad_() for p in (norm.weight, norm.bias))
    assert torch.autograd.gradcheck(f, (x, w, b))


@pytest.mark.parametrize("kind", ["masked_batch", "rbn", "renorm"])
def test_norms_inf_nan_pads_reach_no_gradient(kind):
    norm = lu.make_norm(kind, 4)
    mask = lu.lengths_to_padding_mask([3, 5], 5)
    x = torch.randn(2, 5, 4).masked_fill(mask.unsqueeze(-1), float("nan"))
    x.requires_grad_()
    (norm(x, mask)[~mask].sum() + lu.stat_penalty(norm)).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(norm.weight.grad).all()


def test_norms_refuse_non_bool_masks_with_one_type_error():
    msg = r"padding_mask of dtype torch.bool \(True = pad\), got torch.int64"
    mask = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(TypeError, match=msg):
        lu.MaskedBatchNorm(4)(torch.randn(2, 3, 4), mask)
    with pytest.raises(TypeError, match=msg):
        lu.attention_mask(mask, 3, causal=False)


def test_masked_batchnorm_accepts_a_non_contiguous_mask():
    mask = lu.lengths_to_padding_mask([2, 3, 4], 4).t().contiguous().t()  # (3, 4)
    assert not mask.is_contiguous()
    y = lu.MaskedBatchNorm(4)(torch.randn(3, 4, 4), mask)
    assert y.shape == (3, 4, 4)


def test_regularized_batchnorm_deep_copies_after_a_step():
    import copy

    norm = lu.make_norm("rbn", 4)
    (norm(torch.randn(2, 5, 4)).sum() + lu.stat_penalty(norm)).backward()
    twin = copy.deepcopy(norm)
    assert twin.penalty.grad_fn is None
    assert float(twin.penalty) == float(norm.penalty)


def test_batchnorm_classes_cover_every_batch_normalizing_module():
    from lnbn_utils.norms import BATCHNORM_CLASSES

    for kind in ("batch", "masked_batch", "ghost_batch", "position_batch", "rbn"):
        assert isinstance(lu.make_norm(kind, 4), BATCHNORM_CLASSES)
    assert isinstance(nn.LazyBatchNorm1d(), BATCHNORM_CLASSES)
    assert not isinstance(lu.make_norm("layer", 4), BATCHNORM_CLASSES)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rmsnorm_closed_form_equals_the_default_to_rounding(dtype):
    default, closed = lu.RMSNorm(C), lu.RMSNorm(C, closed_form=True)
    with torch.no_grad():
        default.weight.uniform_(0.5, 1.5)
        closed.weight.copy_(default.weight)
    x = (randn(4, 7, C) * 3 + 1).to(dtype)
    x = x.transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous input
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = default(xa), closed(xb)
    g = randn(4, 7, C, seed=1).to(dtype)
    ya.backward(g), yb.backward(g)
    assert yb.dtype == dtype and xb.grad.dtype == dtype
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else {}
    torch.testing.assert_close(yb, ya, **tol)
    torch.testing.assert_close(xb.grad, xa.grad, **tol)
    torch.testing.assert_close(closed.weight.grad, default.weight.grad, **tol)


def test_rmsnorm_closed_form_passes_gradcheck_and_saves_x_and_one_statistic():
    norm = lu.RMSNorm(5, closed_form=True).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    w = norm.weight.detach().clone().requires_grad_()

    def f(x, w):
        return torch.func.functional_call(norm, {"weight": w}, (x,))

    assert torch.autograd.gradcheck(f, (x, w))
    B, T = 8, 16
    x = torch.randn(B, T, C, requires_grad=True)
    saved = lu.saved_tensor_bytes(lu.RMSNorm(C, closed_form=True), x)
    assert saved == x.numel() * 4 + C * 4 + B * T * 4  # x, weight, 1/rms per token
    with pytest.raises(TypeError, match="closed_form to be a bool"):
        lu.RMSNorm(C, closed_form=1)
