"""lnbn_utils.memory: saved-bytes breakdown and formula, traffic bounds, timing."""

import pytest
import torch
import torch.nn as nn

import lnbn_utils as lu

# --- saved bytes -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["layer", "batch", "masked_batch", "rms", "none"])
@pytest.mark.parametrize("shape", [(2, 3, 4), (8, 64, 128), (1, 16, 256), (5, 7, 2)])
def test_breakdown_matches_formula_and_total(kind, shape):
    B, T, C = shape
    x = torch.randn(B, T, C, requires_grad=True)
    norm = lu.make_norm(kind, C)
    # masked BN's formula is for a padded batch (without a mask it saves what BN saves)
    lengths = [T - 1] + [T] * (B - 1)
    mask = lu.lengths_to_padding_mask(lengths, T) if kind == "masked_batch" else None
    got = lu.saved_tensor_breakdown(norm, x, mask)
    n_real = B * T - 1 if kind == "masked_batch" else None
    assert got == lu.saved_bytes_formula(kind, B, T, C, n_real=n_real)
    assert sum(got.values()) == lu.saved_tensor_bytes(lambda t: norm(t, mask), x)
    assert tuple(got) == lu.SAVED_CATEGORIES


def test_breakdown_with_padding_mask_and_torch_rmsnorm():
    B, T, C = 4, 10, 32
    x = torch.randn(B, T, C, requires_grad=True)
    mask = lu.lengths_to_padding_mask(torch.tensor([10, 7, 3, 5]), T)
    assert lu.saved_tensor_breakdown(
        lu.MaskedBatchNorm(C), x, mask
    ) == lu.saved_bytes_formula("masked_batch", B, T, C, n_real=25)
    # nn.RMSNorm on the CPU is not a fused kernel: it saves what lu.RMSNorm saves
    assert lu.saved_tensor_breakdown(nn.RMSNorm(C), x) == lu.saved_bytes_formula(
        "rms", B, T, C
    )


def test_formula_float64_doubles_float_values():
    f32, f64 = (
        lu.saved_bytes_formula("layer", 2, 3, 4),
        lu.saved_bytes_formula("layer", 2, 3, 4, bytes_per_value=8),
    )
    assert all(f64[k] == 2 * f32[k] for k in f32)
    # masked BN saves its per-token weights as floats, so they double too
    m32, m64 = (
        lu.saved_bytes_formula("masked_batch", 2, 3, 4, bytes_per_value=b)
        for b in (4, 8)
    )
    assert all(m64[k] == 2 * m32[k] for k in m32)


@pytest.mark.parametrize(
    "bad", [dict(kind="group"), dict(B=0), dict(C=2.0), dict(bytes_per_value=0)]
)
def test_formula_rejects_bad_input(bad):
    args = dict(kind="layer", B=2, T=3, C=4) | bad
    with pytest.raises(ValueError, match="expected"):
        lu.saved_bytes_formula(**args)


def test_breakdown_rejects_bad_input():
    with pytest.raises(ValueError, match="nn.Module"):
        lu.saved_tensor_breakdown(lambda x: x, torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="torch.Tensor"):
        lu.saved_tensor_breakdown(lu.LayerNorm(2), [[0.0, 1.0]])


# --- written bytes and timing ------------------------------------------------------


def test_written_bytes_counts_new_storages_only():
    x = torch.randn(3, 5)
    with torch.no_grad():
        assert lu.written_bytes(nn.Linear(5, 7), x) == 3 * 7 * 4
        assert (
            lu.written_bytes(lambda t: t.t().reshape(-1)[:4], x) == 3 * 5 * 4
        )  # t() is a view; reshape copies
        assert (
            lu.written_bytes(lambda t: t.view(15).mul_(2), x.clone()) == 0
        )  # view, then in place
        assert lu.written_bytes(lambda t: t * 2 + 1, x) == 2 * 15 * 4
    with pytest.raises(ValueError, match="callable"):
        lu.written_bytes(3)


def test_median_time_is_positive_and_validates():
    assert lu.median_time(lambda: sum(range(100)), repeats=3, min_seconds=1e-4) > 0
    with pytest.raises(ValueError, match="repeats"):
        lu.median_time(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="callable"):
        lu.median_time(None)


def test_time_ratio_orders_a_slow_and_a_fast_function():
    x = torch.randn(256, 256)
    fast, slow = (
        (lambda: x[0, 0] + 1),
        (lambda: x @ x @ x),
    )  # ~1 op vs ~33 MFLOP: a 1000x gap
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert lu.time_ratio(slow, fast, repeats=5) > 5.0
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="callable"):
        lu.time_ratio(fast, None)
    with pytest.raises(ValueError, match="repeats"):
        lu.time_ratio(fast, fast, repeats=0)


def test_time_ratios_returns_one_sample_per_repeat():
    x = torch.randn(64, 64)
    r = lu.time_ratios(
        lambda: x @ x, lambda: x + 1, repeats=4, min_seconds=1e-4, best_of=2
    )
    assert len(r) == 4 and all(v > 0 for v in r)


# --- traffic bounds, caches, allocator ----------------------------------------------


def test_min_traffic_bounds():
    assert lu.min_traffic("layer") == 2 and lu.min_traffic("layer", backward=True) == 5
    assert lu.min_traffic("batch") == 3 and lu.min_traffic("batch", backward=True) == 8
    # once x fits in the cache, BN's second pass over x is free: LN's bound
    assert lu.min_traffic("batch", backward=True, fits_in_cache=True) == 5
    assert lu.min_traffic("copy", backward=True) == 2
    with pytest.raises(ValueError, match="expected one of"):
        lu.min_traffic("group")


def test_cache_sizes_are_positive_and_ordered():
    sizes = lu.cache_sizes()
    if not sizes:
        pytest.skip("no sysfs cache information on this machine")
    assert all(v > 0 for v in sizes.values())
    levels = sorted(sizes, key=lambda k: int(k[1]))
    assert sizes[levels[-1]] >= sizes[levels[0]]


def test_keep_freed_memory_is_transparent():
    with lu.keep_freed_memory() as ok:
        y = torch.ones(2**22).clone()  # 16 MiB: an mmap-sized allocation
    assert isinstance(ok, bool) and float(y.sum()) == 2**22


def test_activation_bytes_leave_out_parameters():
    B, T, C = 2, 8, 16
    x = torch.randn(B, T, C, requires_grad=True)
    parts = lu.saved_bytes_formula("batch", B, T, C)
    got = lu.activation_bytes(lu.make_norm("batch", C), x)
    assert got == parts["input"] + parts["intermediates"] + parts["statistics"]
    assert got == B * T * C * 4 + 2 * C * 4


def test_interleaved_times_gives_every_function_its_samples():
    x = torch.randn(128, 128)
    t = lu.interleaved_times(
        {"slow": lambda: x @ x @ x, "fast": lambda: x[0, 0] + 1},
        repeats=3,
        best_of=2,
        min_seconds=1e-4,
    )
    assert set(t) == {"slow", "fast"} and all(len(v) == 3 for v in t.values())
    assert min(t["slow"]) > max(t["fast"])
    with pytest.raises(ValueError, match="dict"):
        lu.interleaved_times({})
    with pytest.raises(ValueError, match="callable"):
        lu.interleaved_times({"a": 3})
